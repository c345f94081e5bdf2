"""The benchmarks' code paths stay runnable: the GPU step benchmark at tiny size on the CPU (its paper-size run needs a
GPU, which CI never has). Timings are not asserted (benchmarks/README.md)."""

from __future__ import annotations

import importlib.util
import json
import math

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
