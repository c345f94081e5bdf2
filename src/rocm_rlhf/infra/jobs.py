"""Running a pipeline stage: the bridge between a Snakemake script and the library, without importing Snakemake.

A stage (``rocm_rlhf.pipeline``) is a function ``stage(job)`` declared with :func:`stage` and the config keys it
reads. ``job`` has ``input``, ``output``, ``params``, ``wildcards`` (attribute and index access, like Snakemake's
named lists), ``config``, ``threads`` and ``log``. A workflow script imports its stage and calls
``run_stage(snakemake, stage)``; the CLI (``rocm-rlhf stage ...``) builds the same job by hand. :func:`run_stage`
hands the stage only the keys it declares, so the list a rule's rerun digest hashes is the list the stage can read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Sequence


def stage(*, reads: Sequence[str] | Callable[[Any], Sequence[str]]):
    """Declare a pipeline stage and the dotted config keys it reads (whole sections such as ``"train"`` or single
    values such as ``"sandbox.judge_tau"``). ``reads`` may be a function of the job's wildcards, for stages whose keys
    depend on the run (a baseline reads its own method's block)."""

    def declare(fn):
        fn.reads = reads
        return fn

    return declare


def stage_reads(fn, wildcards: Any = None) -> tuple[str, ...]:
    """The config keys ``fn`` declares, for the job with ``wildcards``."""
    reads = fn.reads
    return tuple(reads(wildcards) if callable(reads) else reads)


class UndeclaredConfigKey(KeyError):
    """A stage read a config key it did not declare (a bug in the stage's ``reads``)."""

    def __str__(self) -> str:
        return self.args[0]


class DeclaredConfig(dict):
    """The part of a config a stage declared: reading any other key that the config has raises
    :class:`UndeclaredConfigKey` naming it (with ``[]`` and ``.get``), instead of a silent default."""

    def __init__(self, part: dict, full: dict, path: str, stage_name: str):
        super().__init__(part)
        self._full, self._path, self._stage = full, path, stage_name

    def _undeclared(self, key):
        where = f"{self._path}.{key}" if self._path else str(key)
        return UndeclaredConfigKey(f"stage '{self._stage}' reads config key '{where}', which its @stage(reads=...) "
                                   f"does not declare: add it there (and so to its rule's rerun digest)")

    def __missing__(self, key):
        if key in self._full:
            raise self._undeclared(key)
        raise KeyError(key)

    def get(self, key, default=None):
        if key in self:
            return self[key]
        if key in self._full:
            raise self._undeclared(key)
        return default


def declared_config(config: dict, keys: Iterable[str], stage_name: str = "?") -> dict:
    """A copy of ``config`` with only the dotted ``keys`` (see :class:`DeclaredConfig`); plain dicts below a key."""
    import copy

    def restrict(full: dict, wanted: list[list[str]], path: str) -> DeclaredConfig:
        part: dict = {}
        for head in dict.fromkeys(k[0] for k in wanted):
            if head not in full:
                continue
            rest = [k[1:] for k in wanted if k[0] == head]
            if any(not r for r in rest) or not isinstance(full[head], dict):
                part[head] = copy.deepcopy(full[head])
            else:
                part[head] = restrict(full[head], rest, f"{path}.{head}" if path else head)
        return DeclaredConfig(part, full, path, stage_name)

    return restrict(config, [k.split(".") for k in keys], "")


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

    @classmethod
    def from_parts(cls, items: list, names: dict) -> "Named":
        """Exactly these positional items and names (a named entry of several files stays a sub-list, not extra
        items, as in Snakemake's named lists)."""
        named = cls()
        named.extend(items)
        named._names = dict(names)
        return named


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


def run_stage(job: Any, fn: Callable[[Any], None]) -> None:
    """Run the stage ``fn`` on ``job``: its declared config keys only, its threads, its log in ``job.log[0]``. In a
    workflow run with a fork server (:mod:`rocm_rlhf.infra.forkserver`) a forked child of the server runs it, which
    has imported torch and the rest already; without one (or when it cannot be reached) this process does."""
    from .forkserver import submit

    status = submit(job, fn)
    if status is None:
        run_stage_here(job, fn)
    elif status != 0:  # the job's process exits with the stage's status, as if it had run it
        log_path = job.log[0] if len(job.log) else None
        print(f"[rocm-rlhf] stage {fn.__name__} failed (exit status {status} in the fork server)"
              + (f": see {log_path}" if log_path else ""), file=sys.stderr, flush=True)
        raise SystemExit(status)


def run_stage_here(job: Any, fn: Callable[[Any], None], where: str = "") -> None:
    """:func:`run_stage` in this process (``where``: how the log's first line says it runs)."""
    name = fn.__name__
    log_path = job.log[0] if len(job.log) else None
    with log_to(log_path):
        t0 = time.time()
        print(f"[rocm-rlhf] {name} started{where}", flush=True)
        try:
            from .utils import set_threads

            set_threads(max(1, int(getattr(job, "threads", 1) or 1)))
            job = SimpleNamespace(**{k: getattr(job, k) for k in ("input", "output", "params", "wildcards", "log")},
                                  threads=getattr(job, "threads", 1),
                                  config=declared_config(job.config, stage_reads(fn, job.wildcards), name))
            fn(job)
        except Exception:
            traceback.print_exc()
            raise
        print(f"[rocm-rlhf] {name} finished in {time.time() - t0:.1f} s", flush=True)
