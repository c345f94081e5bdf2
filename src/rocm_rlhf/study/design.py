"""The study from the evaluation samples: pairs of images of the same (prompt, sample seed) from two arms.

For every pair of the study's arms, ``pairs_per_arm_pair`` distinct (prompt_id, sample_seed) units of the split are
drawn; each side's training run is drawn among its arm's runs (an arm with several training seeds is judged over
them), and which arm is shown on the left is a fair coin, recorded. Attention checks are mixed in: ``identical`` (the
same image on both sides: the expected answer is a tie) and ``broken`` (an image beside random noise: the expected
answer is the intact side). Every draw comes from ``numpy.random.default_rng(seed)``: the same samples and settings
give the same study.

The study is a self-contained folder (it can be copied to the machine that serves it): ``study.json`` (settings and
items), ``items.csv`` (the same items as a table, for reading) and ``images/<content hash>.png`` (file names reveal
neither the arm nor the run). API: :func:`resolve_arms`, :func:`runs_of_arms`, :func:`build_study`,
:func:`load_study`.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from .. import runs
from ..infra.utils import atomic_path, write_json

CHOICES = ("left", "right", "tie")
"""A rater's answers."""

PAIR, IDENTICAL, BROKEN = "pair", "identical", "broken"
CHECK_KINDS = (IDENTICAL, BROKEN)
"""The attention checks, in the order they alternate."""

CHOSEN = "chosen"
"""In ``study.arms``: every divergence at its beta chosen on the validation prompts (``chosen-<divergence>``: one)."""

STUDY_FILE = "study.json"
ITEM_COLUMNS = ("item_id", "kind", "prompt_id", "sample_seed", "prompt", "left_image", "right_image", "left_run",
                "right_run", "left_arm", "right_arm", "expected")
"""The fields of a study item (``expected``: the right answer of an attention check, '' for a comparison)."""


def needs_chosen(spec: Sequence[str], tuned_baselines: Sequence[str] = ()) -> bool:
    """Whether ``study.arms`` names a chosen setting (then the study waits for choose_settings): a chosen beta, or a
    baseline by name among ``tuned_baselines`` (whose arm is its chosen learning rate's)."""
    return any(a == CHOSEN or a.startswith(f"{CHOSEN}-") or a in tuned_baselines for a in spec)


def resolve_arms(spec: Sequence[str], chosen_betas: Mapping[str, str] | None = None,
                 chosen_lrs: Mapping[str, str] | None = None) -> list[str]:
    """The arm ids of ``study.arms``: arm ids ('base', 'rocm-none-b0', 'rocm-kl-b10', 'rlcm', 'ddpo-lr0.003'),
    ``chosen`` (each divergence at its chosen beta, :func:`rocm_rlhf.runs.read_chosen`'s ``{divergence: beta}``) or
    ``chosen-<divergence>``; a tuned baseline named alone ('rlcm') is its chosen learning rate's arm
    (:func:`rocm_rlhf.runs.read_chosen_lrs`). Duplicates dropped, order kept. One clear error for anything else."""
    out: list[str] = []
    for a in spec:
        if chosen_lrs and a in chosen_lrs:
            out.append(runs.baseline_run(a, 0, chosen_lrs[a]).arm)
            continue
        if a == CHOSEN or a.startswith(f"{CHOSEN}-"):
            if chosen_betas is None:
                raise ValueError(f"study.arms names {a!r}, which needs the betas chosen on the validation prompts "
                                 "(results/stats/chosen.csv)")
            divs = list(chosen_betas) if a == CHOSEN else [a[len(CHOSEN) + 1:]]
            for div in divs:
                if div not in chosen_betas:
                    raise ValueError(f"study.arms names {a!r}, but no beta was chosen for divergence {div!r} "
                                     f"(chosen: {', '.join(chosen_betas) or 'none'}); use one of rocm.divergences")
                out.append(runs.rocm_run(div, chosen_betas[div], 0).arm)
        else:
            try:
                out.append(runs.parse_arm(a).arm)
            except ValueError as err:
                raise ValueError(f"study.arms: {err}; or '{CHOSEN}' / '{CHOSEN}-<divergence>'") from None
    out = list(dict.fromkeys(out))
    if len(out) < 2:
        raise ValueError(f"study.arms must name at least two different arms, got {list(spec)} -> {out}")
    return out


def runs_of_arms(arms: Sequence[str], run_ids: Sequence[str]) -> dict[str, list[str]]:
    """``{arm: its run ids among run_ids}`` (sorted by training seed); an error naming an arm without a run."""
    by_arm: dict[str, list[str]] = {}
    for rid in run_ids:
        run = runs.parse_run(rid)
        by_arm.setdefault(run.arm, []).append(run)
    missing = [a for a in arms if a not in by_arm]
    if missing:
        raise ValueError(f"study.arms names arm(s) {missing} that this config does not sample; arms sampled: "
                         f"{', '.join(sorted(by_arm))}")
    return {a: [r.id for r in sorted(by_arm[a], key=lambda r: r.seed)] for a in arms}


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _units(samples: Mapping[str, str | Path]) -> tuple[dict[str, dict], pd.DataFrame]:
    """Each run's images indexed by (prompt_id, sample_seed), and the units (with prompts) every run shares."""
    loaded, units = {}, None
    for rid, path in samples.items():
        with np.load(path, allow_pickle=False) as z:
            keys = list(zip(z["prompt_id"].astype(str), z["sample_seed"].astype(int)))
            loaded[rid] = {k: z["images"][i] for i, k in enumerate(keys)}
            frame = pd.DataFrame({"prompt_id": z["prompt_id"].astype(str), "sample_seed": z["sample_seed"].astype(int),
                                  "prompt": z["prompt"].astype(str)})
        if units is None:
            units = frame
        elif set(zip(units.prompt_id, units.sample_seed)) != set(keys):
            raise ValueError(f"the samples of run {rid!r} ({path}) are not of the same (prompt_id, sample_seed) units "
                             f"as the other runs': sample every run on the same prompts and sample seeds")
    return loaded, units.sort_values(["prompt_id", "sample_seed"]).reset_index(drop=True)


def build_study(samples: Mapping[str, str | Path], arm_runs: Mapping[str, Sequence[str]], out_dir: str | Path, *,
                pairs_per_arm_pair: int, attention_fraction: float, seed: int, split: str = "test") -> pd.DataFrame:
    """Write the study folder ``out_dir`` and return its items (one row per item, :data:`ITEM_COLUMNS`).

    ``samples``: ``{run_id: images.npz}`` of every run of ``arm_runs`` (``{arm: [run ids]}``, :func:`runs_of_arms`).
    ``attention_fraction``: attention checks per comparison (0.1: one check per ten pairs, at least one when > 0),
    alternating identical and broken. Item ids are assigned after a shuffle, so that neither they nor the image names
    tell the arms apart."""
    arms = list(arm_runs)
    if len(arms) < 2:
        raise ValueError(f"a study needs at least two arms, got {arms}")
    if int(pairs_per_arm_pair) < 1:
        raise ValueError(f"study.pairs_per_arm_pair must be >= 1, got {pairs_per_arm_pair}")
    if not 0 <= float(attention_fraction) <= 1:
        raise ValueError(f"study.attention.fraction must be in [0, 1], got {attention_fraction}")
    missing = [r for rs in arm_runs.values() for r in rs if r not in samples]
    if missing:
        raise ValueError(f"no samples given for run(s) {missing}")
    loaded, units = _units({r: samples[r] for rs in arm_runs.values() for r in rs})
    if pairs_per_arm_pair > len(units):
        raise ValueError(f"study.pairs_per_arm_pair = {pairs_per_arm_pair} exceeds the {len(units)} (prompt_id, "
                         f"sample_seed) units of the {split} split: lower it to at most {len(units)}")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    names: dict[bytes, str] = {}

    def image_name(image: np.ndarray) -> str:
        data = _png(image)
        if data not in names:
            name = hashlib.sha256(data).hexdigest()[:20] + ".png"
            path = out / "images" / name
            if not path.exists():
                with atomic_path(path) as tmp:
                    tmp.write_bytes(data)
            names[data] = name
        return names[data]

    def unit_row(i: int) -> dict:
        u = units.iloc[int(i)]
        return {"prompt_id": u.prompt_id, "sample_seed": int(u.sample_seed), "prompt": u.prompt}

    items = []
    for a, b in itertools.combinations(arms, 2):
        for i in rng.choice(len(units), size=int(pairs_per_arm_pair), replace=False):
            row = unit_row(i)
            key = (row["prompt_id"], row["sample_seed"])
            ra, rb = (str(rng.choice(arm_runs[a])), str(rng.choice(arm_runs[b])))
            sides = [(ra, a), (rb, b)]
            if rng.random() < 0.5:
                sides.reverse()
            (lr, la), (rr, rarm) = sides
            items.append({"kind": PAIR, **row, "left_image": image_name(loaded[lr][key]),
                          "right_image": image_name(loaded[rr][key]), "left_run": lr, "right_run": rr,
                          "left_arm": la, "right_arm": rarm, "expected": ""})
    n_checks = math.ceil(float(attention_fraction) * len(items))
    all_runs = sorted(loaded)
    for c in range(n_checks):
        kind = CHECK_KINDS[c % len(CHECK_KINDS)]
        row = unit_row(rng.integers(len(units)))
        rid = str(rng.choice(all_runs))
        arm = runs.parse_run(rid).arm
        intact = loaded[rid][(row["prompt_id"], row["sample_seed"])]
        name = image_name(intact)
        if kind == IDENTICAL:
            items.append({"kind": kind, **row, "left_image": name, "right_image": name, "left_run": rid,
                          "right_run": rid, "left_arm": arm, "right_arm": arm, "expected": "tie"})
            continue
        noise = image_name(rng.integers(0, 256, size=intact.shape, dtype=np.uint8))
        if rng.random() < 0.5:
            items.append({"kind": kind, **row, "left_image": name, "right_image": noise, "left_run": rid,
                          "right_run": "", "left_arm": arm, "right_arm": "", "expected": "left"})
        else:
            items.append({"kind": kind, **row, "left_image": noise, "right_image": name, "left_run": "",
                          "right_run": rid, "left_arm": "", "right_arm": arm, "expected": "right"})
    order = rng.permutation(len(items))
    items = [dict(item_id=f"q{k:04d}", **items[j]) for k, j in enumerate(order)]
    table = pd.DataFrame(items, columns=list(ITEM_COLUMNS))
    write_json(out / STUDY_FILE, {"version": 1, "split": split, "seed": int(seed), "arms": arms,
                                  "arm_runs": {a: list(r) for a, r in arm_runs.items()},
                                  "pairs_per_arm_pair": int(pairs_per_arm_pair),
                                  "attention_fraction": float(attention_fraction), "items": items})
    with atomic_path(out / "items.csv") as tmp:
        table.to_csv(tmp, index=False)
    return table


def load_study(study_dir: str | Path) -> dict:
    """``study.json`` of a study folder, checked: one clear error if the folder is not a study or an image is
    missing."""
    study_dir = Path(study_dir)
    path = study_dir / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{study_dir} is not a study folder: it has no {STUDY_FILE}; build one with "
                                "`snakemake study --cores 1`")
    study = json.loads(path.read_text())
    items = study.get("items")
    if not isinstance(items, list) or not items or any(set(ITEM_COLUMNS) - set(i) for i in items):
        raise ValueError(f"{path} is not a study file: it needs a non-empty list 'items' with the fields "
                         f"{', '.join(ITEM_COLUMNS)}; rebuild it with `snakemake study --cores 1`")
    absent = sorted({i[s] for i in items for s in ("left_image", "right_image")}
                    - {p.name for p in (study_dir / "images").glob("*.png")})
    if absent:
        raise FileNotFoundError(f"{study_dir}/images lacks {len(absent)} image(s) of the study (e.g. {absent[0]}); "
                                "copy the whole study folder")
    return study
