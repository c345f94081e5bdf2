"""The benchmarks' code paths stay runnable: the GPU step benchmark at tiny size on the CPU (its paper-size run needs a
GPU, which CI never has). Timings are not asserted (benchmarks/README.md)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

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
