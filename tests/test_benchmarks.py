"""The benchmarks' code paths stay runnable: the GPU step benchmark at tiny size on the CPU (its paper-size run needs a
GPU, which CI never has). Timings are not asserted (benchmarks/README.md)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

from conftest import REPO

torch.set_num_threads(1)


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_step_benchmark_runs_every_variant_at_tiny_size(tmp_path):
    bench = _load("bench_gpu_step")
    out = tmp_path / "gpu_step.json"
    assert bench.main(["--size", "tiny", "--steps", "3", "--repeats", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["size"] == "tiny" and res["sampler_steps"] == 3 and res["device"] == "cpu"
    assert set(res["variants"]) == {"plain", "gradient_checkpointing", "checkpointing_truncated_4"}
    for name, v in res["variants"].items():
        assert v["seconds_per_step"] > 0, name
        assert math.isnan(v["peak_gpu_memory_gib"]) and v["fits_48gb"] is None, name  # no GPU: not claimed
        assert v["fits_24gb"] is None and v["fits_80gb"] is None, name


def test_gpu_step_benchmark_at_beta_0_and_the_cuda_requirement(tmp_path):
    bench = _load("bench_gpu_step")
    out = tmp_path / "beta0.json"
    assert bench.main(["--size", "tiny", "--steps", "2", "--repeats", "1", "--beta", "0", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["beta"] == 0 and all(v["seconds_per_step"] > 0 for v in res["variants"].values())
    if not torch.cuda.is_available():  # --require-cuda refuses a CPU run before building anything
        assert bench.main(["--require-cuda", "--out", str(tmp_path / "none.json")]) == 2
        assert not (tmp_path / "none.json").exists()


def test_gpu_all_script_parses_its_arguments_and_fails_fast_without_cuda(tmp_path):
    import subprocess

    script = REPO / "benchmarks" / "gpu_all.sh"
    for bad in (["--bogus"], ["--repeats", "x"], ["--repeats", "0"]):
        res = subprocess.run(["bash", str(script), *bad], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert res.returncode == 64 and "gpu_all.sh:" in res.stderr, (bad, res.stderr)
    assert "--skip-nccl" in subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True).stdout
    if torch.cuda.is_available():
        return
    res = subprocess.run(["bash", str(script), "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 3 and "needs a usable CUDA device" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()  # nothing started


def test_the_paper_unet_config_is_lcm_dreamshaper_v7():
    """The architecture the GPU benchmark builds: SD 1.5's UNet with the LCM guidance embedding (pinned from the hub
    config), ~860 M parameters, without downloading anything (meta device)."""
    from diffusers import UNet2DConditionModel

    cfg = _load("bench_gpu_step").LCM_DREAMSHAPER_V7_UNET
    assert cfg["time_cond_proj_dim"] == 256 and cfg["cross_attention_dim"] == 768
    assert tuple(cfg["block_out_channels"]) == (320, 640, 1280, 1280)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg)
    n = sum(p.numel() for p in unet.parameters())
    assert 855e6 < n < 865e6, n


def test_hybrid_gradient_norms_needs_the_nondiff_sandbox(tmp_path):
    """The hybrid's gradient parts are measured on a finished nondiff run's sandbox; without one it says what to
    run, before loading anything."""
    res = subprocess.run([sys.executable, str(REPO / "benchmarks/hybrid_gradient_norms.py"), "--sandbox",
                          str(tmp_path / "none")], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "no sandbox LCM" in res.stderr and "nondiff" in res.stderr


def test_batch_scaling_projection(tmp_path):
    """The batched-runs projection: per-run factors interpolated between measured sizes, only the training steps of
    a job scaled, seed-0 runs and confirmatory seeds of a method in separate groups."""
    import pandas as pd

    mod = _load("bench_batch_scaling")
    measured = {"methods": {
        "rocm": {"1": {"per_run_step_vs_one_run": 1.0}, "3": {"per_run_step_vs_one_run": 0.6},
                 "8": {"per_run_step_vs_one_run": 0.5}},
        "ddpo": {"1": {"per_run_step_vs_one_run": 1.0}, "3": {"per_run_step_vs_one_run": 0.8}}}}
    assert mod.factor(measured, "rocm", 1) == 1.0 and mod.factor(measured, "rocm", 2) == 0.8
    assert mod.factor(measured, "rocm", 20) == 0.5 and mod.factor(measured, "ddpo", 5) == 0.8
    res = tmp_path / "results"
    jobs = {"rocm-kl-b1-s0": (40, 30), "rocm-js-b1-s0": (40, 30), "rocm-kl-b1-s1": (50, 30), "ddpo-s0": (100, 90)}
    for run, (job_s, steps_s) in jobs.items():
        (res / "benchmarks/train").mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"s": [job_s]}).to_csv(res / f"benchmarks/train/{run}.tsv", sep="\t", index=False)
        (res / "runs" / run).mkdir(parents=True)
        pd.DataFrame({"step": [1, 2], "wall_s": [steps_s / 2, steps_s]}).to_csv(res / "runs" / run / "log.csv",
                                                                               index=False)
    pd.DataFrame({"s": [10.0]}).to_csv(res / "benchmarks/evaluate.tsv", sep="\t", index=False)
    out = mod.project(res, measured)
    assert out["groups"] == {"rocm, seed 0": 2, "rocm, confirmatory seeds": 1, "ddpo, seed 0": 1}
    # rocm seed 0: 2 runs at 0.8 -> each 10 + 30 * 0.8; the lone confirmatory run and ddpo unchanged
    assert math.isclose(out["by_method"]["rocm"]["projected_s"], 2 * (10 + 24) + 50)
    assert math.isclose(out["train_projected_s"], 2 * 34 + 50 + 100)
    assert math.isclose(out["all_job_s"], 230 + 10) and math.isclose(out["all_projected_s"], 218 + 10)


def test_adapter_switch_benchmark_checks_the_same_gradients(tmp_path):
    """bench_adapter_switch (and the setup it shares with bench_rocm_step) runs on a random sandbox LCM, and the
    reference switch it replaced gives the same loss and bit-identical gradients as the one in use."""
    out = tmp_path / "adapter_switch.json"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks/bench_adapter_switch.py"), "--lcm",
                          str(tmp_path / "none"), "--batch", "2", "--steps", "2", "--repeats", "1", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["model"] == "random UNet of the sandbox architecture" and data["adapter_layers"] > 0
    assert all(v["loss_equal"] and v["gradients_bit_identical"] for v in data["same_result"].values())
    assert set(data["step_s_median"]) == {"beta_0.1", "beta_0"}


def test_batch_scaling_puts_r_runs_through_each_update():
    """bench_batch_scaling's stand-in for R runs in one model: R times the samples per step and per update, the same
    number of updates per step, for every method (read from the methods the config builds)."""
    from rocm_rlhf.infra.config import load_config
    from rocm_rlhf.training.run import make_method

    mod = _load("bench_batch_scaling")
    base = load_config(REPO / "config/config.yaml")

    def shape(method, r):
        name = method.split("-")[0]
        cfg = load_config(REPO / "config/config.yaml", overrides=mod.batch_overrides(method, r, base))
        m = make_method(name, cfg, **({"divergence": "kl", "beta": 10.0} if name == "rocm" else {}))
        per_step = m.queries_per_step() or cfg["train"]["batch_size"]
        updates = {"rlcm": getattr(m, "num_minibatches", 1), "ddpo": getattr(m, "num_minibatches", 1),
                   "d3po": m.updates_per_pass() if name == "d3po" else 1,
                   "dpok": getattr(m, "policy_updates", 1)}.get(name, 1)
        per_update = m.policy_batch_size if name == "dpok" else per_step / updates
        return per_step, updates, per_update

    for method in mod.METHODS:
        one, three = shape(method, 1), shape(method, 3)
        assert three[0] == 3 * one[0] and three[1] == one[1] and three[2] == 3 * one[2], method


def test_workflow_benchmark_times_each_variant_and_refuses_a_bad_one_before_any_run(tmp_path):
    """bench_workflow (the speed issue's side-by-side runs of whole configs, and bench_fork_server's runner): a
    variant's wall clock and the job-seconds of its rules, on the ci overlay's first sandbox job; a variant naming a
    missing overlay stops it before anything runs."""
    script = REPO / "benchmarks" / "bench_workflow.py"
    out = tmp_path / "wf.json"
    bad = subprocess.run([sys.executable, str(script), "--variant", "a=config/ci.yaml", "--variant",
                          "b=config/nope.yaml", "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode != 0 and "config/nope.yaml" in bad.stderr and not out.exists()
    proc = subprocess.run([sys.executable, str(script), "--variant", "ci=config/ci.yaml", "--target",
                           "results/ci/models/sandbox/vae.json", "--limit-min", "10", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    run = res["runs"][0]
    assert run["rules"]["sandbox"]["jobs"] == 1 and 0 < run["rules"]["sandbox"]["seconds"] < run["wall_s"]
    assert res["summary"]["ci"]["within_limit"] and res["summary"]["ci"]["wall_ratio_to_first"] == 1.0
    assert not Path(run["workdir"]).exists()  # removed without --keep
