"""Shared fixtures: tiny random pipelines saved in Hugging Face formats (the hub code path, offline)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rocm_rlhf.infra.tiny_hub import build_tiny_lcm

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_lcm_dir(tmp_path_factory) -> Path:
    return build_tiny_lcm(tmp_path_factory.mktemp("tiny_lcm") / "pipe")


def assert_same_adapter(run_a: Path, run_b: Path) -> None:
    """The adapters saved in two run folders (``<run>/adapter``) hold the same tensors, bit for bit."""
    from safetensors.torch import load_file

    a = load_file(Path(run_a) / "adapter" / "pytorch_lora_weights.safetensors")
    b = load_file(Path(run_b) / "adapter" / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------------ the session's real ci run
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
CONFIGS = ["--configfile", str(REPO / "config" / "config.yaml"), str(REPO / "config" / "ci.yaml")]


def smk(workdir, *args, check=True):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    # targets first: --configfile, --quiet and --resources take several values and would swallow a target after them
    res = subprocess.run([*SNAKEMAKE, *args, "--directory", str(workdir), *CONFIGS], capture_output=True, text=True,
                         env=env)
    if check and res.returncode != 0:
        logs = "\n".join(p.read_text()[-3000:] for p in (workdir / "logs").rglob("*.log")) if (
            workdir / "logs").exists() else ""
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{res.stdout[-5000:]}\n{res.stderr[-5000:]}\n{logs}")
    return res


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("ci_run")
    smk(wd, "--cores", "2")
    return wd
