"""Render ``docs/benchmarks.md`` from the benchmark records, and the README's generated parts: its measured spans
(from the same records) and its table of methods x tables (from the methods' ``paper`` declarations).

    python -m tools.bench_page                  # docs/benchmarks.md + README.md's generated spans
    python -m tools.bench_page --check          # exit 1 when either is not what the records give (a stale page)
    make benchmarks-page

The records are ``docs/benchmarks/records/*.json`` (:mod:`lewel_bench.benchmarks`: written by the benchmark tools'
``--bench-record`` and by ``tools.bench_command``). A malformed record stops it with one line naming the file.
"""
from __future__ import annotations

from pathlib import Path

from lewel_bench import benchmarks as B
from lewel_bench.args import ArgumentParser, PathArg
from lewel_bench.errors import LewelError
from lewel_bench.io import atomic_write_text
from lewel_bench.stage import cli_entry
from lewel_bench.utils import REPO_ROOT


class StalePage(LewelError):
    """A generated file differs from what its records give."""

    exit_status = 1


def methods_table() -> str:
    """The README's methods x tables table, from every registered method's IN-1K config's ``paper`` declaration."""
    from lewel_bench.config import load_yaml_config
    from lewel_bench.declare import paper_of
    from lewel_bench.tables.spec import table_specs
    from pretrain.experiments import config_files
    from pretrain.methods import METHODS

    files = config_files()
    methods = [(n, paper_of(load_yaml_config(files[n]), str(files[n]))) for n in METHODS.names() if n in files]
    titles = {t.name: t.title if not t.paper or t.title.startswith(t.paper) else f"{t.paper} {t.title}"
              for t in table_specs(REPO_ROOT / "results" / "paper")}
    return B.methods_table(methods, titles)


def outputs(records_dir: Path, page: Path, readme: Path | None) -> dict[Path, str]:
    """path -> the text it should have (the page; the README with its measured spans and its methods table)."""
    recs = B.read_records(records_dir)
    shown = records_dir.relative_to(REPO_ROOT) if records_dir.is_relative_to(REPO_ROOT) else records_dir
    out = {page: B.render_page(recs, shown)}
    if readme is not None:
        text = B.fill_blocks(readme.read_text(), recs, str(readme.name))
        out[readme] = B.fill_span(text, "methods", methods_table(), str(readme.name))
    return out


@cli_entry("bench_page")
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m tools.bench_page", description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=PathArg("dir"), default=str(REPO_ROOT / B.RECORDS_DIR))
    p.add_argument("--out", type=PathArg("out_file"), default=str(REPO_ROOT / B.PAGE), help="the page")
    p.add_argument("--readme", type=PathArg("file"), default=str(REPO_ROOT / "README.md"),
                   help="a file whose <!-- bench:NAME --> spans are filled in")
    p.add_argument("--no-readme", action="store_true", help="leave the README as it is")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 naming a file that is not up to date")
    args = p.parse_args(argv)
    want = outputs(Path(args.records).resolve(), Path(args.out), None if args.no_readme else Path(args.readme))
    stale = [path for path, text in want.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        if stale:
            raise StalePage(f"{', '.join(map(str, stale))} not up to date with {args.records}: run make benchmarks-page")
        print(f"up to date: {', '.join(map(str, want))}")
        return
    for path in stale:
        atomic_write_text(path, want[path])
    print(f"{'written' if stale else 'unchanged'}: {', '.join(map(str, want))}")


if __name__ == "__main__":
    main()
