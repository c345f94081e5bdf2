"""Shared fixtures: tiny random pipelines saved in Hugging Face formats (the hub code path, offline)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from rocm_rlhf.tiny_hub import build_tiny_lcm

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
