"""The training logs: loading ``results/runs/<run_id>/log.csv`` of many runs, and averaging curves over seeds.

API: :func:`load_training_logs` (one table, each run's identity from its run id through
:func:`rocm_rlhf.runs.parse_run`), :func:`load_curves` (the held-out probe's ``curve.csv`` of many runs), :func:`check_logs` (the columns a figure needs) and :func:`mean_over_seeds`
(pointwise mean and std of curves logged at different x). Columns: :data:`RUN_META`, then the log's own;
:data:`LOG_REQUIRED` must be logged, :data:`LOG_OPTIONAL` are NaN where absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .. import runs

LOG_REQUIRED = ("step", "wall_s", "device_hours", "device", "reward_queries", "reward_mean")
LOG_OPTIONAL = ("reward_std", "divergence_mean", "loss")
"""Filled with NaN when absent (baselines have no divergence; ``reward_std`` is empty at a batch of one image).
``div_step_<n>`` columns (divergence per sampler step, ROCM only) are kept as they are."""
RUN_META = ("run_id", "arm", "method", "divergence", "beta", "seed")
"""The run's identity (:meth:`rocm_rlhf.runs.Run.identity`), the first columns of the loaded logs."""


def _run_of(meta: dict, meta_path: Path) -> runs.Run:
    """The run that ``run.json`` describes, from its ``run_id``; its method and seed, where given, must agree."""
    if meta.get("run_id") is None:
        raise ValueError(f"{meta_path} lacks 'run_id'; run.json names its run")
    try:
        run = runs.parse_run(str(meta["run_id"]))
    except ValueError as err:
        raise ValueError(f"{meta_path}: {err}") from None
    for key, value in (("method", run.method), ("seed", run.seed)):
        if meta.get(key) is not None and meta[key] != value:
            raise ValueError(f"{meta_path}: {key} {meta[key]!r} disagrees with run id {run.id!r} ({key} {value!r})")
    return run


def load_training_logs(run_dirs: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Read ``<run_dir>/log.csv`` and ``<run_dir>/run.json`` of every run; return one concatenated table.

    Columns: :data:`RUN_META` (from run.json's ``run_id``), then the log's columns (one row per logged training
    step). Required log columns: :data:`LOG_REQUIRED`; :data:`LOG_OPTIONAL` are NaN when absent. Raises
    ValueError on a missing file or column, an empty log, a run id that is not one, or two runs with one id.
    """
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ValueError("load_training_logs needs at least one run directory (results/runs/<run_id>)")
    frames = []
    for d in dirs:
        log_path, meta_path = d / "log.csv", d / "run.json"
        for p in (log_path, meta_path):
            if not p.is_file():
                raise ValueError(f"{p} does not exist: is {d} a finished training run (results/runs/<run_id>)?")
        run = _run_of(json.loads(meta_path.read_text()), meta_path)
        log = pd.read_csv(log_path)
        missing = [c for c in LOG_REQUIRED if c not in log.columns]
        if missing:
            raise ValueError(f"{log_path} lacks column(s) {missing}; a training log needs {list(LOG_REQUIRED)}")
        if len(log) == 0:
            raise ValueError(f"{log_path} has no rows: the run logged no training step")
        for c in LOG_OPTIONAL:
            if c not in log.columns:
                log[c] = np.nan
        head = pd.DataFrame({"run_id": run.id, **run.identity()}, index=log.index)[list(RUN_META)]
        frames.append(pd.concat([head, log.drop(columns=[c for c in RUN_META if c in log.columns])], axis=1))
    out = pd.concat(frames, ignore_index=True)
    ids = [str(f["run_id"].iloc[0]) for f in frames]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"several run directories carry the same run_id {repeated}; run ids must be unique")
    return out


CURVE_REQUIRED = ("step", "reward_queries", "device_hours", "metric", "mean")
"""The columns of a run's ``curve.csv`` (the held-out probe, :mod:`rocm_rlhf.training.probe`) the analysis needs."""


def load_curves(run_dirs: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Read ``<run_dir>/curve.csv`` (the held-out probe's rows: step, reward_queries, device_hours, metric, mean ...)
    and ``run.json`` of every run into one long table: :data:`RUN_META`, ``device`` (the run's device kind, from
    run.json), then the curve's columns. An error names a missing file or column, an empty curve (a run trained
    without the probe) or a run id that is not one."""
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    frames = []
    for d in map(Path, run_dirs):
        curve_path, meta_path = d / "curve.csv", d / "run.json"
        for p in (curve_path, meta_path):
            if not p.is_file():
                raise ValueError(f"{p} does not exist: is {d} a finished training run (results/runs/<run_id>)?")
        meta = json.loads(meta_path.read_text())
        run = _run_of(meta, meta_path)
        curve = pd.read_csv(curve_path)
        missing = [c for c in CURVE_REQUIRED if c not in curve.columns]
        if missing:
            raise ValueError(f"{curve_path} lacks column(s) {missing}; a probe curve has {list(CURVE_REQUIRED)}")
        if len(curve) == 0:
            raise ValueError(f"{curve_path} has no rows: the run was trained without the held-out probe "
                             "(train.probe.prompts 0, or before it existed); rerun it with the probe on")
        head = pd.DataFrame({"run_id": run.id, **run.identity(), "device": str(meta.get("device", "cpu"))},
                            index=curve.index)
        frames.append(pd.concat([head, curve], axis=1))
    if not frames:
        raise ValueError("load_curves needs at least one run directory (results/runs/<run_id>)")
    return pd.concat(frames, ignore_index=True)


def check_logs(logs: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Check that ``logs`` is a non-empty table of :func:`load_training_logs` with ``columns``; return it."""
    if not isinstance(logs, pd.DataFrame):
        raise ValueError(f"logs must be a DataFrame from load_training_logs, got {type(logs)}")
    missing = [c for c in (*RUN_META, *columns) if c not in logs.columns]
    if missing:
        raise ValueError(
            f"training logs lack column(s) {missing}; build them with load_training_logs(run_dirs) "
            f"(has {list(logs.columns)})"
        )
    if len(logs) == 0:
        raise ValueError("training logs are empty")
    return logs


def mean_over_seeds(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise mean and sample std (ddof=1; NaN with one curve) of curves y_i(x) logged at different x.

    Each curve (x, y) is sorted by x, NaN y dropped, repeated x averaged; then linearly interpolated onto the grid
    = the sorted union of every curve's x inside [max_i min x_i, min_i max x_i] (the range all curves cover: no
    extrapolation). Returns (grid, mean, std). Raises ValueError if a curve is empty or the ranges do not overlap.
    """
    if len(curves) == 0:
        raise ValueError("mean_over_seeds needs at least one curve")
    clean = []
    for x, y in curves:
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.any():
            raise ValueError("a curve has no finite (x, y) point")
        s = pd.Series(y[ok]).groupby(x[ok]).mean()
        clean.append((s.index.to_numpy(dtype=float), s.to_numpy(dtype=float)))
    lo = max(x[0] for x, _ in clean)
    hi = min(x[-1] for x, _ in clean)
    if lo > hi:
        raise ValueError(
            f"the seeds' curves share no x range (starts up to {lo:g}, ends from {hi:g}); cannot average them"
        )
    grid = np.unique(np.concatenate([x[(x >= lo) & (x <= hi)] for x, _ in clean]))
    ys = np.stack([np.interp(grid, x, y) for x, y in clean])
    mean = ys.mean(axis=0)
    std = ys.std(axis=0, ddof=1) if len(clean) > 1 else np.full_like(mean, np.nan)
    return grid, mean, std
