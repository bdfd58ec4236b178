"""A real SLURM cluster on localhost: stages submitted through ``lewel_bench.launch`` (submitit).

The module fixture installs the Debian packages when missing (skips, with the reason, only when they
cannot be installed), starts munged + slurmctld + slurmd on free ports with all state in a scratch
folder, and stops them by PID at the end. Every wait is bounded.

1. a real stage (``eval_knn`` on a random-init ResNet-18, tiny mini data) runs as a SLURM job and writes
   its record;
2. a running job receives the preemption signal (``USR2``, what SLURM sends before a time limit or on
   preemption): submitit calls ``StageJob.checkpoint()``, requeues the job, and the requeued job resumes
   from the stage's checkpoint: the iteration counter continues instead of restarting at 0.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from lewel_bench.launch import _free_port
from slurm_cluster import LocalSlurm, SlurmUnavailable, ensure_installed

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def slurm():
    from submitit.core import logger as submitit_logger

    submitit_logger.get_logger()   # bind submitit's log handler now, not to a test's captured stdout
    try:
        ensure_installed()
    except SlurmUnavailable as e:
        pytest.skip(f"cannot install SLURM here: {e}")
    root = Path(tempfile.mkdtemp(prefix="lwslurm", dir="/tmp"))   # short path: unix socket limit
    cluster = LocalSlurm(root, cpus=os.cpu_count() or 1, ctld_port=_free_port(), slurmd_port=_free_port())
    try:
        t0 = time.monotonic()
        cluster.start(timeout=90)
        print(f"local SLURM up in {time.monotonic() - t0:.1f} s ({root})")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _test_stages_importable(monkeypatch):
    """tests/slurm_stages (tiny probe stages) importable here and inside the jobs (sbatch copies the env)."""
    stages = TESTS / "slurm_stages"
    monkeypatch.syspath_prepend(str(stages))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(stages), os.environ.get("PYTHONPATH")])))


def wait_job(job, cluster: LocalSlurm, timeout: float):
    """``job.result()`` with a deadline (a job killed without a result would otherwise wait forever)."""
    deadline = time.monotonic() + timeout
    while not job.done():
        if time.monotonic() > deadline:
            state = cluster.job_state(job.job_id)
            cluster.run(["scancel", str(job.job_id)])
            out = "\n".join(p.read_text(errors="replace")[-3000:] for p in (job.paths.stdout, job.paths.stderr)
                            if p.exists())
            pytest.fail(f"job {job.job_id} not done after {timeout:.0f} s (state {state})\n{out}\n"
                        f"{cluster.tail_logs()}")
        time.sleep(0.5)
    return job.results()


def slurm_args(tmp: Path, *extra: str) -> list[str]:
    return ["--launcher", "slurm", "--partition", "debug", "--nodes", "1", "--gpus-per-node", "0",
            "--cpus-per-task", "1", "--time", "10", "--folder", str(tmp / "submitit" / "%j"), *extra]


@pytest.fixture(scope="module")
def tiny_imagenet(mini_data, tmp_path_factory) -> Path:
    """30 train / 5 val images per class copied from the shared mini data (short jobs on a loaded machine)."""
    out = tmp_path_factory.mktemp("tinyimagenet")
    for split, keep in (("train", 30), ("val", 5)):
        for cls in sorted((mini_data / "imagenet" / split).iterdir()):
            (out / split / cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[:keep]:
                shutil.copy(f, out / split / cls.name / f.name)
    return out


def test_real_stage_runs_as_slurm_job_and_writes_record(slurm, tiny_imagenet, tmp_path, capsys):
    from lewel_bench import launch
    from lewel_bench.records import load_records

    rec_dir, out = tmp_path / "records", tmp_path / "knn"
    id_file = tmp_path / "jobs.id"
    t0 = time.monotonic()
    job = launch.main(slurm_args(tmp_path, "--job-id-file", str(id_file), "--job-name", "knn-test") + [
        "--", "eval_knn", "--config", "mini", "--ckpt", "random:resnet18", "--data", str(tiny_imagenet),
        "--out", str(out), "--records-dir", str(rec_dir), "data.crop_size=32", "data.resize_size=32",
        "data.num_workers=0", "batch_size=100"])
    printed = capsys.readouterr().out.split()
    assert printed and printed[-1] == str(job.job_id), "the launcher prints the job id"
    assert id_file.read_text().split() == [str(job.job_id)]
    # a second job chained with afterok (what `make all LAUNCHER=slurm` does) waits for the first
    after = launch.main(slurm_args(tmp_path, "--dependency", f"afterok:{job.job_id}", "--job-id-file", str(id_file))
                        + ["--", "rank_probe", str(tmp_path / "after")])
    assert id_file.read_text().split() == [str(job.job_id), str(after.job_id)]
    assert slurm.job_field(after.job_id, "Dependency").startswith(f"afterok:{job.job_id}")
    assert slurm.job_state(after.job_id) == "PENDING"
    wait_job(job, slurm, timeout=150)
    print(f"eval_knn through SLURM: {time.monotonic() - t0:.1f} s")
    assert slurm.wait_state(job.job_id, {"COMPLETED", "FAILED", "CANCELLED"}, 30) == "COMPLETED"
    assert slurm.job_field(job.job_id, "JobName") == "knn-test"

    records, problems = load_records(rec_dir)
    assert problems == []
    assert len(records) == 1, records
    rec = records[0]
    assert (rec["eval"], rec["protocol"], rec["method"]) == ("knn", "k20", "random")
    assert 0.0 <= rec["metrics"]["top1"] <= 100.0
    assert rec["n_train"] == 300 and rec["n_val"] == 50
    log = Path(str(job.paths.stderr)).read_text()
    assert "eval_knn attempt 0" in log, "StageJob ran the stage inside the SLURM job"
    wait_job(after, slurm, timeout=60)
    assert (tmp_path / "after" / "rank0.json").exists()
    start_after = slurm.job_field(after.job_id, "StartTime")
    assert start_after >= slurm.job_field(job.job_id, "EndTime"), "the dependent job started after the first ended"


def test_two_tasks_rendezvous_from_slurm_environment(slurm, tmp_path):
    """One task per GPU: here 2 CPU tasks; each gets RANK / WORLD_SIZE / MASTER_* from submitit's
    JobEnvironment and they all-reduce over gloo (the multi-node path, on one node)."""
    from lewel_bench import launch

    job = launch.main(slurm_args(tmp_path, "--tasks-per-node", "2") + ["--", "rank_probe", str(tmp_path / "ddp")])
    wait_job(job, slurm, timeout=90)
    seen = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [s["rank"] for s in seen] == [0, 1] and {s["world"] for s in seen} == {2}
    assert {s["rank_sum"] for s in seen} == {1.0}, "both ranks joined one process group"
    assert {s["env"]["MASTER_ADDR"] for s in seen} == {"localhost"}
    assert {s["env"]["SLURM_JOB_ID"] for s in seen} == {str(job.job_id)}


def test_preempted_job_requeues_and_resumes(slurm, tmp_path):
    from lewel_bench import launch

    out = tmp_path / "toy"
    iters = 14
    job = launch.main(slurm_args(tmp_path, "--signal-delay-s", "30") + [
        "--", "toy_resume", "--out", str(out), "--iters", str(iters), "--sleep", "0.4"])

    # wait (bounded) until the job runs and has checkpointed a few iterations
    deadline = time.monotonic() + 90
    ckpt = out / "checkpoint.json"
    while not (ckpt.exists() and json.loads(ckpt.read_text())["iter"] >= 4):
        assert time.monotonic() < deadline, f"toy job never progressed (state {slurm.job_state(job.job_id)})"
        assert not job.done(), "the toy job finished before it could be preempted"
        time.sleep(0.2)
    first_ckpt = json.loads(ckpt.read_text())["iter"]

    # what SLURM does on preemption / before the time limit: USR2 to the job's tasks
    r = slurm.run(["scancel", "--signal=USR2", str(job.job_id)])
    assert r.returncode == 0, r.stderr
    wait_job(job, slurm, timeout=120)

    assert slurm.wait_state(job.job_id, {"COMPLETED", "FAILED", "CANCELLED"}, 30) == "COMPLETED"
    assert slurm.job_field(job.job_id, "Restarts") == "1", "the job was requeued exactly once"
    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    attempts = sorted({ln["attempt"] for ln in lines})
    assert attempts == [0, 1], f"expected a first attempt and one requeued attempt, got {attempts}"
    second = [ln for ln in lines if ln["attempt"] == 1]
    assert second[0]["resumed_from"] >= first_ckpt > 0, "the requeued job resumed from the checkpoint"
    assert len({ln["pid"] for ln in lines}) == 2
    # resumed, not restarted: the counter continues where the first attempt stopped (at most the one
    # iteration interrupted between its log line and its checkpoint is redone), every iteration ran
    first = [ln["iter"] for ln in lines if ln["attempt"] == 0]
    assert second[0]["iter"] == second[0]["resumed_from"] in (first[-1], first[-1] + 1)
    assert [ln["iter"] for ln in second] == list(range(second[0]["iter"], iters))
    assert first == list(range(len(first)))
    assert json.loads((out / "done.json").read_text()) == {"iters": iters}
    log = Path(str(job.paths.stderr)).read_text()
    assert "requeueing (attempt 1)" in log


def test_failed_stage_is_reported_and_cancels_dependents(slurm, tmp_path):
    """A stage that exits with an error fails its job with the message (no endless wait), and a job
    chained on it with afterok is cancelled instead of pending forever (kill-on-invalid-dep)."""
    import submitit

    from lewel_bench import launch

    bad = launch.main(slurm_args(tmp_path) + ["--", "eval_knn", "--config", "mini", "--ckpt", "random:resnet18",
                                              "--data", str(tmp_path / "no_such_root"), "--out", str(tmp_path / "o")])
    after = launch.main(slurm_args(tmp_path, "--dependency", f"afterok:{bad.job_id}")
                        + ["--", "rank_probe", str(tmp_path / "after")])
    with pytest.raises(submitit.core.utils.FailedJobError, match="no_such_root"):
        wait_job(bad, slurm, timeout=90)
    assert slurm.wait_state(after.job_id, {"CANCELLED", "COMPLETED", "FAILED"}, 30) == "CANCELLED"
    assert not (tmp_path / "after").exists()
