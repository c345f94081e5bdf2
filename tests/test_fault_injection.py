"""Fault injection on a real ci run (issue: checkpoints bound to their config): kill the pipeline mid-training,
unlock and resume; damage the newest checkpoint and rerun; edit the config and rerun; feed bad config values.
Nothing is lost (the resumed run equals an uninterrupted one), nothing stale is resumed, and every error names its
file or key. Works on a copy of the session's finished ci run, so the sandbox is not rebuilt."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pandas as pd
import pytest

from conftest import assert_same_adapter
from conftest import CONFIGS, SNAKEMAKE  # and the session's ci_run fixture, shared with test_pipeline_ci

pytestmark = pytest.mark.slow
RUN = "rocm-kl-b0.1-s0"
TARGET = f"results/ci/runs/{RUN}/run.json"


def _cmd(workdir, overlay, *args):
    return [*SNAKEMAKE, TARGET, "--cores", "1", *args, "--directory", str(workdir), *CONFIGS, str(overlay)]


def _run(workdir, overlay, *args, check=True):
    res = subprocess.run(_cmd(workdir, overlay, *args), capture_output=True, text=True,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if check:
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _job_log(workdir) -> str:
    return (workdir / "logs" / "ci" / "train" / f"{RUN}.log").read_text()


@pytest.fixture(scope="module")
def copies(ci_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    out = {}
    for name in ("faulted", "clean"):
        shutil.copytree(ci_run, root / name, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
        out[name] = root / name
    long = root / "long.yaml"  # a longer run of one grid point, checkpointed often: something to kill
    long.write_text("train: {steps: 40, checkpoint_every: 4}\n")
    out["long"] = long
    return out


def test_kill_unlock_resume_damage_and_edit(copies):
    faulted, clean, long = copies["faulted"], copies["clean"], copies["long"]
    _run(clean, long, "--forcerun", "train_rocm")  # the uninterrupted reference

    # 1. kill -9 the whole pipeline once training has written a checkpoint past step 8
    proc = subprocess.Popen(_cmd(faulted, long, "--forcerun", "train_rocm"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    ckpts = faulted / "results" / "ci" / "runs" / RUN / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpts / "step_000012").exists() and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (faulted / "results" / "ci" / "runs" / RUN / "run.json").exists()

    # 2. the README's recovery: the next run refuses, naming the remedy (the lock, or, since log.csv is written while
    # the job trains, its incomplete output first), then --unlock and --rerun-incomplete resume
    locked = _run(faulted, long, check=False)
    said = (locked.stdout + locked.stderr).lower()
    assert locked.returncode != 0 and ("unlock" in said or "--rerun-incomplete" in said and "log.csv" in said)
    _run(faulted, long, "--unlock")
    _run(faulted, long, "--rerun-incomplete")
    assert "resumed from" in _job_log(faulted)
    assert_same_adapter(faulted / "results" / "ci" / "runs" / RUN, clean / "results" / "ci" / "runs" / RUN)
    log = pd.read_csv(faulted / "results" / "ci" / "runs" / RUN / "log.csv")
    assert list(log["step"]) == list(range(1, 41))  # nothing lost, nothing repeated

    # 3. damage the newest checkpoint: it is set aside and the run replays from the one before, to the same end
    newest = sorted(ckpts.glob("step_*"))[-1]
    trainer = newest / "trainer.pt"
    trainer.write_bytes(trainer.read_bytes()[:100])
    _run(faulted, long, "--forcerun", "train_rocm")
    text = _job_log(faulted)
    assert f"checkpoint results/ci/runs/{RUN}/checkpoints/{newest.name} set aside (damaged" in text, text[-3000:]
    assert_same_adapter(faulted / "results" / "ci" / "runs" / RUN, clean / "results" / "ci" / "runs" / RUN)

    # 4. edit the config: the job reruns by itself and starts fresh, the old checkpoints set aside (not resumed)
    edited = long.parent / "edited.yaml"
    edited.write_text("train: {steps: 40, checkpoint_every: 4, lr: 0.004}\n")
    _run(faulted, edited)
    assert "stale: made under other training settings" in _job_log(faulted)
    meta = json.loads((faulted / "results" / "ci" / "runs" / RUN / "run.json").read_text())
    assert meta["config"]["train"]["lr"] == 0.004 and meta["settings"]["lr"] == 0.004
    log = pd.read_csv(faulted / "results" / "ci" / "runs" / RUN / "log.csv")
    assert list(log["step"]) == list(range(1, 41))
    ref = pd.read_csv(clean / "results" / "ci" / "runs" / RUN / "log.csv")
    assert log["loss"].iloc[-1] != ref["loss"].iloc[-1]  # trained under the new lr, not resumed from the old one


@pytest.mark.parametrize("overlay, key", [
    ("train: {lr: 1e-3}\n", "train.lr"),  # YAML 1.1 reads 1e-3 as text
    ("train: {steps: 4.0}\n", "train.steps"),
    ("rocm: {seeds: [0, 0]}\n", "rocm.seeds"),
    ("figures: {quality_metric: golde}\n", "figures.quality_metric"),
    ("train: {reward: gold, surrogate: ''}\n", "train.reward"),  # no gradient, and nothing for ROCM to climb
    ("baselines: {ddpo: {batch_size: 6}}\n", "baselines.ddpo.num_minibatches"),
])
def test_bad_config_values_fail_before_any_job_naming_the_key(copies, overlay, key):
    f = copies["long"].parent / "bad.yaml"
    f.write_text(overlay)
    res = _run(copies["faulted"], f, "-n", check=False)
    assert res.returncode != 0 and f"config key '{key}'" in res.stdout + res.stderr, res.stderr[-2000:]
