"""Prompt sets: the sandbox grammar's train / eval / val splits and Pick-a-Pic v1 captions, as CSV files to open.

Prompt tables are DataFrames with ``prompt_id`` (stable), ``prompt`` and ``split``. Sandbox: the distinct captions of
:mod:`rocm_rlhf.sandbox.captions`, ``prompt_id = "sbx-%04d"`` of the caption's index, held-out (colour, shape) pairs
kept out of the train split. Pick-a-Pic: cleaned, deduplicated captions of a hub dataset, a local dataset folder or a
.parquet / .csv file, ``prompt_id = "pap-%05d"`` of the index in the cleaned pool. API: :func:`sandbox_prompts`,
:func:`pickapic_prompts`, :func:`clean_captions`, :func:`write_prompts`, :func:`read_prompts`. Validation prompts
(:func:`sandbox_splits`, :func:`pickapic_val_prompts`; beta is chosen on them, the eval prompts stay the untouched test
set) are drawn as the eval prompts, share no caption with train or eval, and have ids prefixed :data:`VAL_PREFIX`.
The split and cleaning rules: docs/method.md, section 'Conventions and run vocabulary' (Prompt sets).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from rocm_rlhf.infra.hub import ModelNotAvailableError, is_offline
from rocm_rlhf.infra.utils import atomic_path

DEFAULT_HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (("yellow", "triangle"), ("green", "circle"))
SANDBOX_COLUMNS: tuple[str, ...] = (
    "prompt_id",
    "prompt",
    "split",
    "shape",
    "color",
    "size",
    "position",
    "heldout",
    "template_id",
)
PICKAPIC_COLUMNS: tuple[str, ...] = ("prompt_id", "prompt", "split")
# The paper's prompt source. The same captions without the images (a few MB instead of hundreds of GB) are in the
# hub dataset "yuvalkirstain/pickapic_v1_no_images"; prefer it for staging.
PICKAPIC_DEFAULT = "yuvalkirstain/pickapic_v1"
PICKAPIC_NO_IMAGES = "yuvalkirstain/pickapic_v1_no_images"
CAPTION_COLUMN = "caption"
VAL_PREFIX = "val-"
"""Prefix of the validation prompts' ids ("val-sbx-0123", "val-pap-00042"): distinct from every eval id, so their
per-image noise (rocm_rlhf.evaluation.unit_seed of prompt id and sample seed) differs too, and a score row tells its
split by its prompt id."""
VAL_STREAM = 1
"""Pick-a-Pic: the validation draw uses ``numpy.random.default_rng([seed, VAL_STREAM])``, a stream of its own."""


# ------------------------------------------------------------------------------------------------------- sandbox
def sandbox_prompts(
    world,
    n_train: int,
    n_eval: int,
    heldout_pairs: Sequence[Sequence[str]] = DEFAULT_HELDOUT_PAIRS,
    seed: int = 0,
    eval_heldout_fraction: float = 0.5,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train_df, eval_df)``: :func:`sandbox_splits` without a validation split (the same two tables as with one)."""
    splits = sandbox_splits(world, n_train, n_eval, 0, heldout_pairs, seed, eval_heldout_fraction)
    return splits["train"], splits["eval"]


def sandbox_splits(
    world,
    n_train: int,
    n_eval: int,
    n_val: int,
    heldout_pairs: Sequence[Sequence[str]] = DEFAULT_HELDOUT_PAIRS,
    seed: int = 0,
    eval_heldout_fraction: float = 0.5,
) -> dict[str, pd.DataFrame]:
    """Train, eval and validation prompt tables from the sandbox grammar: ``{"train": ..., "eval": ..., "val": ...}``.

    Args:
        world: the :class:`~rocm_rlhf.sandbox.render.World` (its grammar; kept for a uniform interface).
        n_train: train prompts, drawn uniformly without replacement from the captions of non-held-out pairs.
        n_eval: eval prompts: ``round(n_eval * eval_heldout_fraction)`` drawn from the held-out-pair captions and the
            rest from the in-distribution captions left after the train draw.
        n_val: validation prompts, drawn as the eval prompts (``round(n_val * eval_heldout_fraction)`` from the
            held-out pairs) from the captions the train and eval draws left. Drawn after them from the same
            generator, so the train and eval tables are the same whatever ``n_val``.
        heldout_pairs: (colour, shape) pairs kept out of train entirely (may be empty; then eval and val are all
            in-distribution).
        seed: seed of the draw (numpy ``default_rng``).

    Tables have columns ``SANDBOX_COLUMNS``; ``size`` / ``position`` are "" when the caption does not mention them.
    Train and eval ids are ``sbx-%04d`` of the caption's index, validation ids the same with :data:`VAL_PREFIX`
    (``val-sbx-%04d``); no caption is in two splits. Rows are in the (random) order of the draw.
    """
    from rocm_rlhf.sandbox.captions import all_captions
    from rocm_rlhf.sandbox.render import COLOR_NAMES, SHAPES, World

    if not isinstance(world, World):
        raise TypeError(f"world must be a rocm_rlhf.sandbox.render.World, got {type(world).__name__}")
    pairs = set()
    for pair in heldout_pairs:
        if len(pair) != 2 or pair[0] not in COLOR_NAMES or pair[1] not in SHAPES:
            raise ValueError(
                f"held-out pair {pair!r} must be (colour, shape) with colour in {COLOR_NAMES} and shape in {SHAPES}"
            )
        pairs.add((pair[0], pair[1]))
    if len(pairs) == len(COLOR_NAMES) * len(SHAPES):
        raise ValueError("heldout_pairs holds out every (colour, shape) pair: nothing is left to train on")
    for name, value in (("n_train", n_train), ("n_eval", n_eval), ("n_val", n_val)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if not 0.0 <= eval_heldout_fraction <= 1.0:
        raise ValueError(f"eval_heldout_fraction must be in [0, 1], got {eval_heldout_fraction!r}")

    captions = all_captions()
    heldout_ids = [i for i, c in enumerate(captions) if (c.color, c.shape) in pairs]
    indist_ids = [i for i, c in enumerate(captions) if (c.color, c.shape) not in pairs]
    n_eval_heldout = int(round(n_eval * eval_heldout_fraction)) if pairs else 0
    n_eval_indist = n_eval - n_eval_heldout
    n_val_heldout = int(round(n_val * eval_heldout_fraction)) if pairs else 0
    n_val_indist = n_val - n_val_heldout
    if n_train + n_eval_indist + n_val_indist > len(indist_ids):
        val_terms = (" + in-distribution val prompts", f" + {n_val_indist}", ", n_val") if n_val else ("", "", "")
        raise ValueError(
            f"the grammar has {len(indist_ids)} in-distribution captions (outside the held-out pairs "
            f"{sorted(pairs)}), but n_train + in-distribution eval prompts{val_terms[0]} = {n_train} + "
            f"{n_eval_indist}{val_terms[1]} = {n_train + n_eval_indist + n_val_indist}; lower n_train or "
            f"n_eval{val_terms[2]} (or raise eval_heldout_fraction)"
        )
    if n_eval_heldout + n_val_heldout > len(heldout_ids):
        val_terms = (f" + round(n_val * eval_heldout_fraction) = {n_eval_heldout} + {n_val_heldout}", ", n_val") \
            if n_val else (f" = {n_eval_heldout}", "")
        raise ValueError(
            f"the grammar has {len(heldout_ids)} captions of the held-out pairs {sorted(pairs)}, but "
            f"round(n_eval * eval_heldout_fraction){val_terms[0]}; lower n_eval{val_terms[1]} or "
            "eval_heldout_fraction"
        )

    rng = np.random.default_rng(seed)
    indist = rng.permutation(np.asarray(indist_ids, dtype=np.int64))
    train_ids = indist[:n_train]
    eval_indist_ids = indist[n_train : n_train + n_eval_indist]
    heldout = rng.permutation(np.asarray(heldout_ids, dtype=np.int64))
    eval_heldout_ids = heldout[:n_eval_heldout]
    eval_ids = rng.permutation(np.concatenate([eval_heldout_ids, eval_indist_ids]))
    # the validation draw comes last: the draws above, and so train and eval, do not depend on n_val
    val_indist_ids = indist[n_train + n_eval_indist : n_train + n_eval_indist + n_val_indist]
    val_heldout_ids = heldout[n_eval_heldout : n_eval_heldout + n_val_heldout]
    val_ids = rng.permutation(np.concatenate([val_heldout_ids, val_indist_ids]))

    def table(ids: np.ndarray, split: str, prefix: str = "") -> pd.DataFrame:
        rows = []
        for i in ids:
            c = captions[int(i)]
            rows.append(
                {
                    "prompt_id": f"{prefix}sbx-{int(i):04d}",
                    "prompt": c.text,
                    "split": split,
                    "shape": c.shape,
                    "color": c.color,
                    "size": c.size,
                    "position": c.position,
                    "heldout": (c.color, c.shape) in pairs,
                    "template_id": c.template_id,
                }
            )
        df = pd.DataFrame(rows, columns=list(SANDBOX_COLUMNS))
        return df.astype({"heldout": bool, "template_id": np.int64})

    return {"train": table(train_ids, "train"), "eval": table(eval_ids, "eval"),
            "val": table(val_ids, "val", VAL_PREFIX)}


# ----------------------------------------------------------------------------------------------------- Pick-a-Pic
def _local_builder(source: str) -> tuple[str, dict] | None:
    """(builder, keyword arguments) of ``datasets.load_dataset`` for a local source; None for a hub id."""
    path = Path(source).expanduser()
    if path.is_dir():  # a dataset folder in the hub's layout: load_dataset finds its data files and splits
        return str(path), {"columns": [CAPTION_COLUMN]}
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        if path.exists():
            raise ValueError(f"local prompt source {source!r} must be a dataset folder or a .parquet or .csv file "
                             "with a 'caption' column")
        return None
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {source!r} does not exist")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            columns = list(pq.read_schema(path).names)
        else:
            columns = list(pd.read_csv(path, nrows=0, encoding="utf-8").columns)
    except Exception as err:  # noqa: BLE001 -- empty, truncated, not UTF-8 ...: one error naming the file
        raise ValueError(f"prompt file {source!r} cannot be read as {suffix[1:]}: {_reason(err)}") from err
    if CAPTION_COLUMN not in columns:
        raise ValueError(f"{source}: no '{CAPTION_COLUMN}' column (columns: {columns})")
    if suffix == ".parquet":
        return "parquet", {"data_files": str(path), "columns": [CAPTION_COLUMN]}
    # keep_default_na=False: a caption such as "NA" stays a string; empty cells still come back as None.
    return "csv", {"data_files": str(path), "usecols": [CAPTION_COLUMN], "keep_default_na": False}


def _load_captions(source: str, split: str, cache_dir: str | os.PathLike | None) -> list:
    """All values of the caption column of ``source`` (hub dataset id or local .parquet/.csv), in dataset order."""
    import datasets

    local = _local_builder(source)
    kwargs = {"cache_dir": str(cache_dir)} if cache_dir is not None else {}
    if local is not None:
        builder, extra = local
        # Local files always land in datasets' "train" split, whatever the caller's split label; a folder has splits.
        try:
            ds = datasets.load_dataset(builder, split=split if Path(builder).is_dir() else "train", **extra, **kwargs)
        except Exception as err:  # noqa: BLE001 -- an unterminated quote, a bad row ...: name the file
            raise ValueError(f"prompt source {source!r} (split '{split}') cannot be read: {_reason(err)}") from err
        if len(ds) == 0:
            raise ValueError(f"prompt source {source!r} (split '{split}') has no rows")
    else:
        try:
            # Only the caption column is read; note that for "yuvalkirstain/pickapic_v1" the download still
            # includes the images (hundreds of GB): stage "yuvalkirstain/pickapic_v1_no_images" (same captions).
            ds = datasets.load_dataset(source, split=split, columns=[CAPTION_COLUMN], **kwargs)
        except (OSError, ConnectionError, FileNotFoundError) as err:
            where = "offline (HF_HUB_OFFLINE=1) and not in the Hugging Face cache" if is_offline() else "not reachable"
            lighter = (
                f" (the same captions without images: '{PICKAPIC_NO_IMAGES}')" if source == PICKAPIC_DEFAULT else ""
            )
            raise ModelNotAvailableError(
                f"dataset '{source}' (split '{split}') is {where}. Stage it once on a machine with network access: "
                f'`snakemake --cores 1 stage_models --configfile <your config>` or `python -c "import datasets; '
                f"datasets.load_dataset('{source}', split='{split}', columns=['{CAPTION_COLUMN}'])\"`, then run "
                f"offline with HF_HUB_OFFLINE=1{lighter}, or pass a local .parquet/.csv file with a "
                f"'{CAPTION_COLUMN}' column."
            ) from err
    if CAPTION_COLUMN not in ds.column_names:
        raise ValueError(f"{source}: no '{CAPTION_COLUMN}' column (columns: {ds.column_names})")
    return list(ds[CAPTION_COLUMN])


def _reason(err: BaseException) -> str:
    """The innermost message of a library error (datasets wraps the parser's), on one line."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]


def clean_captions(captions: Sequence, min_words: int = 3, max_chars: int = 300) -> list[str]:
    """The cleaned, case-insensitively deduplicated pool of captions (the rules: docs/method.md, section 'Conventions
    and run vocabulary')."""
    pool: list[str] = []
    seen: set[str] = set()
    for text in captions:
        if not isinstance(text, str):
            continue
        text = " ".join(text.split())
        if not text or len(text.split(" ")) < min_words or len(text) > max_chars:
            continue
        key = text.casefold()
        if key in seen:
            continue
        seen.add(key)
        pool.append(text)
    return pool


def pickapic_prompts(
    source: str = PICKAPIC_DEFAULT,
    n: int = 4000,
    seed: int | Sequence[int] = 0,
    split: str = "train",
    min_words: int = 3,
    max_chars: int = 300,
    cache_dir: str | os.PathLike | None = None,
    *,
    exclude: Iterable[str] = (),
    id_prefix: str = "",
) -> pd.DataFrame:
    """``n`` distinct Pick-a-Pic captions drawn with ``seed``: columns ``prompt_id``, ``prompt``, ``split``.

    ``source`` is a hub dataset id (paper: "yuvalkirstain/pickapic_v1"; "yuvalkirstain/pickapic_v1_no_images" holds the
    same captions without images), a local folder in a hub dataset's layout, or a local .parquet / .csv file with a
    "caption" column. ``split`` is the hub or folder split to read (and the label written in the ``split`` column).
    ``cache_dir`` is passed to ``datasets.load_dataset``. ``exclude``: captions never drawn (compared after the
    cleaning's whitespace normalisation, case-insensitively); ``id_prefix`` goes before every ``pap-%05d`` id (the
    index in the cleaned pool, exclusions included). Without exclusions the draw is
    ``default_rng(seed).choice(len(pool), n, replace=False)``. Raises
    :class:`~rocm_rlhf.infra.hub.ModelNotAvailableError` when a hub dataset is not available (e.g. offline and not
    cached), ``ValueError`` when fewer than ``n`` captions survive the cleaning and the exclusions. Rows are in the
    (random) order of the draw.
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if min_words < 0 or max_chars < 1:
        raise ValueError(f"need min_words >= 0 and max_chars >= 1, got {min_words}, {max_chars}")
    raw = _load_captions(str(source), split, cache_dir)
    pool = clean_captions(raw, min_words=min_words, max_chars=max_chars)
    excluded = {" ".join(str(t).split()).casefold() for t in exclude}
    candidates = np.asarray([i for i, text in enumerate(pool) if text.casefold() not in excluded], dtype=np.int64)
    if n > len(candidates):
        left = f", {len(candidates)} of them not excluded (of {len(excluded)} excluded captions)" if excluded else ""
        raise ValueError(
            f"{source} ({split}): only {len(pool)} captions remain after cleaning (of {len(raw)} rows; "
            f"min_words={min_words}, max_chars={max_chars}, case-insensitive dedup){left}, fewer than n={n}"
        )
    chosen = candidates[np.random.default_rng(seed).choice(len(candidates), size=int(n), replace=False)]
    return pd.DataFrame(
        {
            "prompt_id": [f"{id_prefix}pap-{int(i):05d}" for i in chosen],
            "prompt": [pool[int(i)] for i in chosen],
            "split": [split] * int(n),
        },
        columns=list(PICKAPIC_COLUMNS),
    )


def pickapic_val_prompts(
    source: str,
    n: int,
    seed: int,
    split: str,
    exclude: Iterable[str],
    min_words: int = 3,
    max_chars: int = 300,
    cache_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """The validation prompts: ``n`` captions of ``split`` drawn as :func:`pickapic_prompts` draws the eval prompts,
    but never one of ``exclude`` (the train and eval captions), from a stream of their own
    (``default_rng([seed, VAL_STREAM])``), with ids prefixed :data:`VAL_PREFIX` and ``split`` "val"."""
    val = pickapic_prompts(source, n, [int(seed), VAL_STREAM], split, min_words, max_chars, cache_dir,
                           exclude=exclude, id_prefix=VAL_PREFIX)
    return val.assign(split="val")


# ------------------------------------------------------------------------------------------------------------ I/O
def write_prompts(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a prompt table as CSV (UTF-8, no index), atomically; prompt ids must be unique."""
    missing = [c for c in ("prompt_id", "prompt") if c not in df.columns]
    if missing:
        raise ValueError(f"a prompt table needs the columns prompt_id and prompt; missing {missing}")
    dup = df["prompt_id"][df["prompt_id"].duplicated()]
    if len(dup):
        raise ValueError(f"prompt_id must be unique; duplicated: {sorted(set(dup))[:5]}")
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, encoding="utf-8")


def read_prompts(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`write_prompts`: text columns stay strings ("" stays "", never NaN);
    ``heldout`` comes back as bool and ``template_id`` as int when present."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist (written by the prompts rule)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot be read as a prompt table (CSV, UTF-8): {_reason(err)}") from err
    missing = [c for c in ("prompt_id", "prompt") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a prompt table, missing columns {missing} (has {list(df.columns)})")
    if df.empty:
        raise ValueError(f"{path}: the prompt table has no rows")
    dup = df["prompt_id"][df["prompt_id"].duplicated()]
    if not dup.empty:
        raise ValueError(f"{path}: prompt_id {dup.iloc[0]!r} appears more than once; ids must be unique")
    empty = df["prompt_id"][df["prompt"].str.strip() == ""]
    if not empty.empty:
        raise ValueError(f"{path}: prompt {empty.iloc[0]!r} is empty")
    if "heldout" in df.columns:
        bad = ~df["heldout"].isin(["True", "False"])
        if bad.any():
            raise ValueError(f"{path}: column heldout must be True/False, got {df['heldout'][bad].iloc[0]!r}")
        df["heldout"] = df["heldout"] == "True"
    if "template_id" in df.columns:
        df["template_id"] = df["template_id"].astype(np.int64)
    return df
