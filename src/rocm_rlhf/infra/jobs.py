"""Running a pipeline stage: the bridge between a Snakemake script and the library, without importing Snakemake.

A stage is a function ``stage(job)`` where ``job`` has ``input``, ``output``, ``params``, ``wildcards`` (objects
with attribute and index access, like Snakemake's named lists), ``config`` (the validated config dict), ``threads``
and ``log``. ``workflow/scripts/*.py`` are one line: ``run_stage(snakemake, "module:function")``; the package CLI
(``rocm-rlhf stage ...``) builds the same object by hand for debugging outside Snakemake.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any


class Named(list):
    """A list with attribute access by name (a stand-in for Snakemake's Namedlist)."""

    def __init__(self, items=(), **named):
        super().__init__(list(items) + [v for v in named.values() if v not in items])
        self._names = dict(named)

    def __getattr__(self, name):
        try:
            return self.__dict__["_names"][name]
        except KeyError:
            raise AttributeError(name) from None

    def keys(self):
        return self._names.keys()


def make_job(input=None, output=None, params=None, wildcards=None, config=None, log=None, threads=1):
    def named(d):
        if d is None:
            return Named()
        if isinstance(d, dict):
            return Named(**d)
        return d

    return SimpleNamespace(input=named(input), output=named(output), params=named(params),
                           wildcards=named(wildcards), config=config or {}, log=named(log), threads=threads)


@contextlib.contextmanager
def cli_args(job: Any, stage: str, threads: int | None = None):
    """The arguments of ``rocm-rlhf stage <stage> ...`` that rebuild ``job`` in another process (its resolved config
    in a temporary file, removed when the block ends; no log: the caller forwards the output to its own)."""
    import json
    import tempfile

    def pairs(named) -> list[str]:
        out = []
        for key in named.keys():
            value = getattr(named, key)
            if isinstance(value, (list, tuple)):
                if len(value) > 1:
                    raise ValueError(f"'{key}' has {len(value)} values; the stage command line takes one per key")
                if not value:
                    continue
                value = value[0]
            out.append(f"{key}={value}")
        return out

    fd, path = tempfile.mkstemp(prefix="rocm_rlhf_config.", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(job.config, fh)
        threads = threads if threads is not None else int(getattr(job, "threads", 1) or 1)
        args = ["stage", stage, "--config", path, "--threads", str(max(1, threads))]
        for opt, flag in (("input", "--input"), ("output", "--output"), ("wildcards", "--wildcard"),
                          ("params", "--param")):
            items = pairs(getattr(job, opt))
            if items:
                args += [flag, *items]
        yield args
    finally:
        os.unlink(path)


def resolve(target: str):
    mod, _, fn = target.partition(":")
    return getattr(importlib.import_module(mod), fn)


@contextlib.contextmanager
def log_to(path: str | os.PathLike | None):
    """Send stdout, stderr and the logging module to ``path`` (appending), if given."""
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        old_level = root.level
        root.setLevel(logging.INFO)
        with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            try:
                yield
            finally:
                root.removeHandler(handler)
                root.setLevel(old_level)


def run_stage(job: Any, target: str) -> None:
    """Run ``target`` ("module:function") on ``job`` with its log redirected to ``job.log[0]``."""
    log_path = job.log[0] if len(job.log) else None
    with log_to(log_path):
        t0 = time.time()
        print(f"[rocm-rlhf] {target} started", flush=True)
        try:
            from .utils import set_threads

            set_threads(max(1, int(getattr(job, "threads", 1) or 1)))
            resolve(target)(job)
        except Exception:
            traceback.print_exc()
            raise
        print(f"[rocm-rlhf] {target} finished in {time.time() - t0:.1f} s", flush=True)
