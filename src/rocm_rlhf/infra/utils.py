"""Small shared helpers: seeding, threads, device choice, atomic writes, versions.

torch is imported inside the functions that need it, so that the analysis stages (statistics, tables, figures) run
in an environment without it.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def seed_everything(seed: int):
    """Seed python, numpy and torch; return a CPU torch generator seeded the same way."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_threads(n: int | None) -> None:
    """Torch intra-op threads. Sandbox jobs run single-threaded, two at a time on 2 cores (SPEC section 3)."""
    if n is None or n <= 0:
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    try:
        import torch
    except ImportError:  # the analysis environment has no torch
        return
    torch.set_num_threads(n)


def pick_device(name: str = "auto"):
    """A torch.device: "auto" is CUDA when available, else CPU; "cuda" on a machine without a usable CUDA device is
    an error at once (the paper's setting asks for it: no silent CPU training of an SD-sized UNet)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise RuntimeError(f"config key 'device' is '{name}' but no CUDA device is usable here (torch "
                           f"{torch.__version__}, {build}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})."
                           f" Run on a GPU machine or node, install a CUDA build of torch, or set device: cpu for a "
                           f"toy run (config/paper-tiny.yaml does)")
    return torch.device(name)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "diffusers", "transformers", "peft", "accelerate", "rocm-rlhf"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
