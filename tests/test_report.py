"""`make report`: the static page from synthetic records, a tiny run folder and the real results/paper tables,
checked as text and in a real browser.

The browser is Debian's ``chromium`` in headless mode, installed by the module fixture when missing (root +
apt-get, bounded time, like the SLURM packages of ``tests/test_slurm.py``; the tests skip, saying why, only where
it cannot be installed). It is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: NUL-
separated JSON on file descriptors 3 and 4, standard library only): console messages of level error, uncaught
exceptions, failed loads (``Log.entryAdded`` errors) and every request URL are collected while the page loads; then
the page is asked which tables it has and whether each image decoded (``naturalWidth > 0``). A full-page
screenshot is always written under the test's tmp folder and its path is printed and named in any failure. The
no-JavaScript check renders with ``--blink-settings=scriptEnabled=false --dump-dom`` and reads the DOM.
"""
from __future__ import annotations

import base64
import html.parser
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from helpers import apt_install
from lewel_bench.records import make_record, now_iso, write_record
from lewel_bench.utils import REPO_ROOT
from tools import make_report as mr
from tools import make_tables as mt

if TYPE_CHECKING:  # typing.Self: Python 3.11+
    from typing import Self

FP_MINI = "f1" * 32          # the fake run's data fingerprint (and the mini records')
FP_IN = "a7" * 32            # "imagenet" records
PAPER_TABLES = [s.name for s in mt.specs() if (REPO_ROOT / "results" / "paper" / f"{s.name}.csv").is_file()]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--mute-audio"]


# --------------------------------------------------------------------------- fixture: records, runs, report
def _rec(records: Path, *, method: str, exp: str, epochs: int | None, ev: str, protocol: str, metrics: dict,
         seed: int = 0, dataset: str = "mini", fp: str = FP_MINI, group: str = "g", **extra) -> Path:
    rec = make_record(method=method, pretrain_exp=exp, pretrain_epochs=epochs, eval=ev, protocol=protocol,
                      metrics=metrics, seed=seed, checkpoint_sha256="0" * 64, config={"protocol": protocol},
                      start_time=now_iso(), dataset=dataset, data={"name": dataset, "fingerprint": fp},
                      group=group, run_id=f"{group}-{seed}", **extra)
    return write_record(rec, records)


def _tiny_lewel_checkpoint(path: Path, data_root: Path) -> dict:
    from lewel_bench.config import load_config
    from pretrain.cli import CONFIG_DIR
    from pretrain.methods import METHODS

    cfg = load_config("lewel_m_mini", CONFIG_DIR, ["model.hidden=64", "model.dim=32", "model.queue_size=64",
                                                   f"data.root={data_root}", "epochs=2"])
    torch.manual_seed(0)
    method = METHODS.get("lewel_m")(cfg)
    sd = method.state_dict()
    torch.save({"model": {k: v for k, v in sd.items() if not k.startswith(("target.", "queue"))}, "config": cfg,
                "epoch": 2, "meta": {"format": "lewel-bench/pretrain", "method": "lewel_m", "exp": "lewel_m",
                                     "epochs": 2, "arch": cfg["arch"], "git": "feedc0ffee" * 4,
                                     "backbone_prefix": "online.backbone."}}, path)
    return cfg


def _run_folder(runs: Path, name: str, method: str, fp: str, loss0: float, knn: list[float],
                cfg_extra: dict | None = None) -> Path:
    import yaml

    d = runs / name
    d.mkdir(parents=True)
    ident = {"run_id": f"rid-{name}", "group": f"grp-{name}",
             "identity": {"stage": "pretrain", "code_version": 1, "config": {"method": method},
                          "data": {"name": "mini", "fingerprint": fp}}}
    (d / "identity.json").write_text(json.dumps(ident))
    cfg = {"method": method, "arch": "resnet18", "epochs": 2, "knn": {"k": 20, "split": "val"},
           "_meta": {"config_path": f"/x/pretrain/configs/{name}_mini.yaml", "overrides": ["epochs=2"]},
           **(cfg_extra or {})}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    lines = [{"iter": i, "epoch": (i - 1) // 5, "loss": loss0 - 0.1 * i, "lr": 0.06 * (1 - i / 10),
              "momentum": 0.99 + 0.001 * i, "images_per_s": 50.0, "loss_g": loss0 + 0.5, "loss_a": loss0 - 0.5}
             for i in range(1, 11)]
    lines += [{"iter": 5 * (e + 1), "epoch": e + 1, "knn_top1": v} for e, v in enumerate(knn)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d


@pytest.fixture(scope="module")
def fixture_dirs(tmp_path_factory, mini_data):
    root = tmp_path_factory.mktemp("report_fixture")
    records, runs = root / "results" / "records", root / "runs"
    records.mkdir(parents=True)
    for seed, (t1, t5) in enumerate([(49.0, 95.0), (51.0, 95.4), (50.0, 95.2)]):   # mean 50.0 ± 1.0, n=3
        _rec(records, method="lewel_m", exp="lewel_m", epochs=2, ev="linear", protocol="mini",
             metrics={"top1": t1, "top5": t5}, seed=seed, group="g-mini-linear",
             checkpoint=str(runs / "lewel_m" / "backbone.pth"), arch="resnet18")
    _rec(records, method="lewel_b", exp="lewel_b", epochs=100, ev="linear", protocol="lewel_b_sgd",
         metrics={"top1": 72.5, "top5": 89.0}, dataset="imagenet", fp=FP_IN, group="g-in-linear")  # +0.6 / -1.5
    _rec(records, method="lewel_b", exp="lewel_b", epochs=100, ev="voc_det", protocol="c4_24k",
         metrics={"AP": 50.1, "AP50": 81.0, "AP75": 63.0}, dataset="voc", fp=FP_IN, group="g-voc",
         transfer={"trunk": 100, "box_head": 12})                                                    # -6.0: strong red
    _rec(records, method="random", exp="random", epochs=0, ev="knn", protocol="k20", metrics={"top1": 48.0},
         group="g-random-knn", arch="resnet18", k=20, checkpoint="random:resnet18")
    _rec(records, method="lewel_m", exp="lewel_m", epochs=2, ev="knn", protocol="k20", metrics={"top1": 47.0},
         group="g-knn", arch="resnet18", k=20)
    failed = make_record(method="byol", pretrain_exp="byol", pretrain_epochs=2, eval="linear", protocol="mini",
                         metrics={"top1": 1.0}, seed=0, checkpoint_sha256="0" * 64, config={}, start_time=now_iso())
    failed.update(status="failed", failure="non-finite metric(s): top1=nan", metrics={"top1": None})
    write_record(failed, records)
    (records / "broken.json").write_text("{not json")
    lewel = _run_folder(runs, "lewel_m", "lewel_m", FP_MINI, 6.0, [30.0, 31.0])
    _tiny_lewel_checkpoint(lewel / "checkpoint.pth", mini_data / "imagenet")
    _run_folder(runs, "byol", "byol", "b0" * 32, 2.0, [25.0, 28.0])        # other data: no random reference
    (runs / "random_resnet18" / "eval_knn").mkdir(parents=True)           # an evaluation folder: not a run
    bench = root / "bench.json"
    bench.write_text(json.dumps({"setup": "resnet50, 224 px, batch 8, fp32, 2 threads", "ratios": [
        {"ratio": "lewel_b / byol", "time": 1.379, "flop_floor": 1.269, "target": 1.03},
        {"ratio": "lewel_m / mocov2", "time": 1.134, "flop_floor": 1.090, "target": 1.01}]}))
    return root, records, runs, bench


@pytest.fixture(scope="module")
def report(fixture_dirs):
    root, records, runs, bench = fixture_dirs
    out = root / "report"
    t0 = time.perf_counter()
    assert mr.main(["--records", str(records), "--runs", str(runs), "--out", str(out), "--bench", str(bench)]) == 0
    print(f"make_report on the fixture: {time.perf_counter() - t0:.1f}s")
    return out / "index.html"


class _Collect(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(text: str) -> list[tuple[str, dict]]:
    p = _Collect()
    p.feed(text)
    return p.tags


EXPECTED_TABLES = set(PAPER_TABLES) | {"other_results", "unmatched", "runs", "records", "bench-ratios"}


# --------------------------------------------------------------------------- the page as text
def test_report_content(report):
    text = report.read_text()
    tags = _tags(text)
    tables = {a["data-table"] for t, a in tags if t == "table" and "data-table" in a}
    assert tables == EXPECTED_TABLES
    # self-contained: relative links only, every linked file exists, nothing from the network
    for t, a in tags:
        for attr in ("src", "href"):
            v = a.get(attr)
            if v is None or v.startswith("#"):
                continue
            assert not v.startswith(("http:", "https:", "//", "/", "file:")), f"<{t} {attr}={v!r}> is not relative"
            assert (report.parent / v).is_file(), f"<{t} {attr}={v!r}>: no such file in the report"
        assert t not in ("link", "iframe"), f"external resource tag <{t}>"
    imgs = sorted(a["src"] for t, a in tags if t == "img")
    assert imgs == ["img/align_lewel_m.png", "img/curves_all.png", "img/curves_byol.png", "img/curves_lewel_m.png"]
    # table 1: the mini rows (mean ± std, n) and the imagenet row beside the paper with coloured deltas
    assert "50.0 ± 1.0 <span class=\"n\">n=3</span>" in text
    assert f"mini:{FP_MINI[:8]}" in text and f"imagenet:{FP_IN[:8]}" in text
    assert 'class="delta dpos" style="background-color:rgba(22,163,74,' in text           # +0.6 top-1
    assert 'class="delta dneg" style="background-color:rgba(220,38,38,' in text           # -1.5 top-5
    assert "trunk+box_head" in text                                                       # the detector's weights
    assert "No records match this table yet" in text                                      # e.g. Table 5
    # unmatched: the failed run and the malformed file; the run index and the records
    assert "failed run, skipped" in text and "broken.json" in text
    assert 'id="run-lewel_m"' in text and 'id="run-byol"' in text and "random_resnet18" not in text.split(
        'id="records"')[0].split('id="runs"')[1]
    assert "feedc0ffee" in text                                                           # commit from the meta
    assert "lewel_m_mini.yaml" in text and "files/runs/lewel_m/config.yaml" in text
    # curves: the random-init reference from the knn record of the same data, and the note where there is none
    assert "random-init reference 48.0" in text
    assert "no random-init reference: no kNN record of method random on data mini:b0b0b0b0" in text
    # cost ratios: the benchmark file and the paper's Table 9 ratios
    assert "1.379" in text and "1.044" in text and "1.007" in text


def test_delta_colour_by_sign_and_size():
    cp, sp = mr.delta_style(0.5)
    cn, sn = mr.delta_style(-0.5)
    _, big = mr.delta_style(-8.0)
    assert cp == "dpos" and "22,163,74" in sp and cn == "dneg" and "220,38,38" in sn
    alpha = lambda s: float(s.rsplit(",", 1)[1].rstrip(")"))
    assert alpha(sp) == alpha(sn) < alpha(big) <= 0.85
    assert mr.delta_style(None) == ("", "")


def test_report_rerun_removes_stale_files_and_reads_made_tables(fixture_dirs, tmp_path):
    _root, records, runs, _bench = fixture_dirs
    out = tmp_path / "rep"
    (out / "img").mkdir(parents=True)
    (out / "img" / "old.png").write_bytes(b"x")
    tables = tmp_path / "tables"
    mt.make_tables(records, REPO_ROOT / "results" / "paper", tables)
    mr.main(["--records", str(records), "--runs", str(runs), "--out", str(out), "--tables", str(tables),
             "--no-align"])
    assert not (out / "img" / "old.png").exists()
    text = (out / "index.html").read_text()
    assert f"read from {tables}" in text and "50.0 ± 1.0" in text and "--no-align" in text


def test_bad_input_is_one_line_naming_the_file(fixture_dirs, tmp_path, caplog):
    _root, records, runs, _ = fixture_dirs
    bad = tmp_path / "bench.json"
    bad.write_text("[1, 2")
    with caplog.at_level(logging.ERROR, logger="tools.make_report"), pytest.raises(SystemExit) as e:
        mr.main(["--records", str(records), "--runs", str(runs), "--out", str(tmp_path / "o"), "--bench", str(bad)])
    assert e.value.code == 2
    msg = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(msg) == 1 and str(bad) in msg[0] and "\n" not in msg[0]
    broken_runs = tmp_path / "runs"
    shutil.copytree(runs / "byol", broken_runs / "byol")
    with open(broken_runs / "byol" / "metrics.jsonl", "a") as f:
        f.write("{truncated\n")
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="tools.make_report"), pytest.raises(SystemExit):
        mr.main(["--records", str(records), "--runs", str(broken_runs), "--out", str(tmp_path / "o"), "--no-align"])
    assert any("metrics.jsonl:13: not JSON" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "o" / "index.html").exists()


def test_make_report_target(tmp_path):
    r = subprocess.run(["make", "-n", "report", f"RUNS={tmp_path}/runs", "BENCH=b.json"], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert "-m tools.make_report" in r.stdout and f'--runs "{tmp_path}/runs"' in r.stdout
    assert '--bench "b.json"' in r.stdout and '--out "results/report"' in r.stdout
    assert "report" in subprocess.run(["make", "help"], cwd=REPO_ROOT, capture_output=True, text=True,
                                      timeout=60, check=False).stdout


# --------------------------------------------------------------------------- the page in a real browser
class ChromiumUnavailable(RuntimeError):
    pass


def _chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def ensure_chromium(timeout: float = 300.0) -> str:
    """Debian's chromium, installed with apt-get when missing (root only); ChromiumUnavailable says why not."""
    apt_install(["chromium"], lambda: _chromium_binary() is not None, ChromiumUnavailable, timeout)
    return _chromium_binary()


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        return ensure_chromium()
    except ChromiumUnavailable as e:
        pytest.skip(f"cannot install chromium here: {e}")


class Browser:
    """Headless chromium driven over the DevTools protocol on a pipe (fds 3 / 4, NUL-terminated JSON)."""

    def __init__(self, binary: str, width: int = 1400, height: int = 2000, timeout: float = 60.0,
                 flags: tuple[str, ...] = ()) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="lewel-chromium-")
        r3, self._w = os.pipe()      # we write commands, chromium reads fd 3
        self._r, w4 = os.pipe()      # chromium writes fd 4, we read

        def child_fds() -> None:
            os.dup2(r3, 3)
            os.dup2(w4, 4)

        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe",
             f"--window-size={width},{height}", *flags, "about:blank"],
            pass_fds=(3, 4), preexec_fn=child_fds, start_new_session=True,  # noqa: PLW1509 - no threads here
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(r3)
        os.close(w4)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer within {self.timeout:.0f} s")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise EOFError(f"chromium closed the DevTools pipe (exit code {self.proc.poll()})")
            self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\0")
        return json.loads(msg)

    def wait(self, pred, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            m = self._read(deadline)
            if pred(m):
                return m
            self.events.append(m)

    def send(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        mid = self._id
        reply = self.wait(lambda m: m.get("id") == mid)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": url})
        self.wait(lambda m: m.get("method") == "Page.loadEventFired")

    def evaluate(self, expr: str):
        res = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"evaluate failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def outer_html(self) -> str:
        """The rendered DOM, read through the DOM domain (works with the page's JavaScript off)."""
        root = self.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        return self.send("DOM.getOuterHTML", {"nodeId": root})["outerHTML"]

    def screenshot(self, path: Path, max_height: int = 12000) -> Path:
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height), "scale": 1}
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description")))
                                                                   for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}")
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log error: {p['entry'].get('text')} ({p['entry'].get('url', '')})")
            elif m == "Network.loadingFailed":
                out.append(f"load failed: {p.get('errorText')} ({p.get('type')})")
        return out

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send("Browser.close", session=False)
        except (OSError, RuntimeError, TimeoutError, EOFError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)   # the process group this Browser started
            self.proc.wait(timeout=10)
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


PAGE_STATE = """JSON.stringify({
  js: document.documentElement.classList.contains('js'),
  tables: Array.from(document.querySelectorAll('table[data-table]')).map(t => [t.dataset.table, t.rows.length]),
  images: Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight]),
  pos: Array.from(document.querySelectorAll('td.dpos')).map(td => getComputedStyle(td).backgroundColor),
  neg: Array.from(document.querySelectorAll('td.dneg')).map(td => getComputedStyle(td).backgroundColor),
  width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight
})"""


def test_report_in_browser(report, chromium, tmp_path):
    shot = tmp_path / "report.png"
    url = report.resolve().as_uri()
    with Browser(chromium) as b:
        b.open(url)
        state = json.loads(b.evaluate(PAGE_STATE))
        b.screenshot(shot)
        problems, requests = b.problems(), b.requests()
    print(f"screenshot of the rendered report: {shot}")
    try:
        assert state["js"], "the page's script did not run"
        tables = dict(state["tables"])
        assert set(tables) == EXPECTED_TABLES
        assert all(n > 1 for n in tables.values()), f"empty tables: {tables}"
        assert len(state["images"]) == 4
        bad = [i for i in state["images"] if not (i[1] and i[2] > 0 and i[3] > 0)]
        assert not bad, f"images that did not load: {bad}"
        assert not problems, f"console errors / failed loads: {problems}"
        remote = [u for u in requests if not u.startswith(("file:", "data:"))]
        assert not remote, f"the page fetched from the network: {remote}"
        assert state["pos"] and all(c.startswith("rgba(22, 163, 74") for c in state["pos"])
        assert state["neg"] and all(c.startswith("rgba(220, 38, 38") for c in state["neg"])
        assert shot.stat().st_size > 10_000
    except AssertionError as e:
        raise AssertionError(f"{e}\nscreenshot of the failed run: {shot}") from None


def test_report_without_javascript(report, chromium, tmp_path):
    """JavaScript off (``--blink-settings=scriptEnabled=false``; ``--dump-dom`` prints nothing then, as it
    serialises the page with a script, so the DOM is read over DevTools): the tables and images are all there."""
    shot = tmp_path / "report_nojs.png"
    with Browser(chromium, flags=("--blink-settings=scriptEnabled=false",)) as b:
        b.open(report.resolve().as_uri())
        dom = b.outer_html()
        b.screenshot(shot)
        problems = b.problems()
    print(f"screenshot of the report without JavaScript: {shot}")
    try:
        tags = _tags(dom)
        html_tag = next(a for t, a in tags if t == "html")
        assert "js" not in (html_tag.get("class") or "").split(), "the script ran although JavaScript is off"
        tables = {a["data-table"] for t, a in tags if t == "table" and "data-table" in a}
        assert tables == EXPECTED_TABLES
        assert len([1 for t, _ in tags if t == "img"]) == 4
        assert "JavaScript is off: everything is here" in dom
        assert not problems, f"errors / failed loads: {problems}"
    except AssertionError as e:
        raise AssertionError(f"{e}\nscreenshot of the failed run: {shot}") from None
