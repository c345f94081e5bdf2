"""The per-image score table: its columns, its one validator and its reader.

One row per (run, image, metric), written by the evaluation stage as ``results/scores/<split>/<run>.csv`` and concatenated
into ``results/scores/all.csv``. API: :data:`SCORE_COLUMNS` (the written layout), :data:`KEY_COLUMNS` (what the
statistics need), :data:`ARM_ATTRIBUTES`, :data:`UNIT` (the pairing unit), :func:`check_scores`,
:func:`read_scores` and :func:`name_list`. The column meanings are in docs/method.md,
section 'Evaluation, statistics, tables and figures' (The score table).
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np
import pandas as pd

from .. import runs

SCORE_COLUMNS = ["run_id", "arm", "method", "divergence", "beta", "seed", "prompt_id", "sample_seed", "prompt",
                 "metric", "value"]
"""The columns of a score table, in the order the evaluation stage writes them."""

ARM_ATTRIBUTES = ("method", "divergence", "beta")
"""Columns that describe the arm (constant within an arm): a run's :meth:`rocm_rlhf.runs.Run.identity`."""

KEY_COLUMNS = tuple(c for c in SCORE_COLUMNS if c not in (*ARM_ATTRIBUTES, "prompt"))
"""The columns the statistics need: run_id, arm, seed, prompt_id, sample_seed, metric, value."""

UNIT = ["prompt_id", "sample_seed"]
"""The pairing unit: images of the same (prompt_id, sample_seed) share their initial noise across runs."""

DIVERGENCE_VALUES = (runs.UNREGULARISED, *runs.DIVERGENCES)
"""The values of the ``divergence`` column, in the order of rows and panels."""


def name_list(x: str | Iterable[str]) -> list[str]:
    """One name or several, as a list without repeats (order kept)."""
    items = [x] if isinstance(x, str) else list(x)
    return list(dict.fromkeys(items))


def check_scores(scores: pd.DataFrame, metrics: str | Iterable[str] = (), *, arm_attributes: bool = True
                 ) -> pd.DataFrame:
    """Check that ``scores`` is a score table holding every metric of ``metrics``; return it unchanged.

    Always: a DataFrame with the :data:`KEY_COLUMNS`, not empty, finite numeric values, one row per (arm, seed,
    prompt_id, sample_seed, metric), one (arm, seed) per run id. With ``arm_attributes`` (the tables and figures):
    also the :data:`ARM_ATTRIBUTES`, with known methods and divergences and a beta >= 0 on every ROCM row. Raises
    one ValueError naming the first problem.
    """
    if not isinstance(scores, pd.DataFrame):
        raise ValueError(f"scores must be a pandas DataFrame (as read from results/scores/*.csv), got {type(scores)}")
    required = (*KEY_COLUMNS, *ARM_ATTRIBUTES) if arm_attributes else KEY_COLUMNS
    missing = [c for c in required if c not in scores.columns]
    if missing:
        raise ValueError(
            f"score table lacks column(s) {missing}; it needs {list(required)} (has {list(scores.columns)})"
        )
    if len(scores) == 0:
        raise ValueError("score table is empty: no scores to summarise, tabulate or plot")
    _check_values(scores)
    if arm_attributes:
        _check_arm_attributes(scores)
    have = set(scores["metric"].astype(str))
    absent = [m for m in name_list(metrics) if m not in have]
    if absent:
        raise ValueError(
            f"metric(s) {absent} are not in the score table (its metrics: {sorted(have)}); score them in the "
            "evaluation stage or choose metrics that exist"
        )
    return scores


def _check_values(scores: pd.DataFrame) -> None:
    """Finite values, each image scored once per run and metric, one (arm, seed) per run id."""
    try:
        values = scores["value"].to_numpy(dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"column 'value' must be numeric: {err}") from None
    bad = ~np.isfinite(values)
    if bad.any():
        where = scores.loc[bad, ["arm", "metric"]].drop_duplicates().head(5).to_records(index=False).tolist()
        raise ValueError(
            f"{int(bad.sum())} score value(s) are NaN or infinite (e.g. (arm, metric) in {where}); "
            "fix or drop the failed images in the scoring stage, the statistics do not guess"
        )
    key = ["arm", "seed", *UNIT, "metric"]
    dup = scores.duplicated(key, keep=False)
    if dup.any():
        ex = scores.loc[dup, key].head(3).to_records(index=False).tolist()
        raise ValueError(
            f"{int(dup.sum())} rows share (arm, seed, prompt_id, sample_seed, metric), e.g. {ex}: each run must "
            "score each image once per metric (are two run ids mapped to the same arm and seed?)"
        )
    ids = scores[["run_id", "arm", "seed"]].drop_duplicates()
    multi = ids["run_id"][ids["run_id"].duplicated()].unique()
    if len(multi):
        raise ValueError(f"run id(s) {list(multi[:5])} appear with several (arm, seed): one run is one arm and seed")


def _check_arm_attributes(scores: pd.DataFrame) -> None:
    """Known methods and divergences; a numeric beta, >= 0 on ROCM rows (NaN on an adaptive beta's arm,
    ``rocm-<divergence>-t<target>``)."""
    bad_m = sorted(set(scores["method"].astype(str)) - set(runs.ARM_METHODS))
    if bad_m:
        raise ValueError(f"unknown method(s) {bad_m} in the score table; known methods: {list(runs.ARM_METHODS)}")
    bad_d = sorted(set(scores["divergence"].astype(str)) - set(DIVERGENCE_VALUES))
    if bad_d:
        raise ValueError(
            f"unknown divergence(s) {bad_d} in the score table; known: {list(DIVERGENCE_VALUES)} "
            f"('{runs.UNREGULARISED}' for beta = 0 and for non-ROCM methods)"
        )
    try:
        beta = scores["beta"].to_numpy(dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"column 'beta' must be numeric (NaN for non-ROCM methods): {err}") from None
    rocm = (scores["method"] == "rocm").to_numpy()
    adaptive = {a: getattr(runs.arm_or_none(a), "adaptive", False) for a in scores["arm"].astype(str).unique()}
    adaptive = scores["arm"].astype(str).map(adaptive).to_numpy(dtype=bool)  # an adaptive beta: NaN, target in the id
    bad_b = rocm & ~(np.isfinite(beta) & (beta >= 0)) & ~adaptive
    if bad_b.any():
        arms = sorted(scores.loc[bad_b, "arm"].astype(str).unique())[:5]
        raise ValueError(f"ROCM arm(s) {arms} have a missing or negative beta; ROCM rows need beta >= 0 (0: none)")


def read_scores(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Read one score CSV or several and concatenate them (only empty fields are missing values: 'none' stays)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return pd.concat([pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in paths], ignore_index=True)
