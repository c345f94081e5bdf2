"""Beta per divergence is chosen once, on the validation prompts' scores (the choose_settings stage writes
results/stats/chosen.csv), and the report stages report on the test prompts' scores (results/scores/all.csv): a
validation table whose best beta differs from the test table's decides Table 1's rows, fig_efficiency's lines and
the gallery's rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rocm_rlhf import runs
from rocm_rlhf.analysis.scores import SCORE_COLUMNS
from rocm_rlhf.infra.config import validate_config
from rocm_rlhf.infra.jobs import make_job, run_stage
from rocm_rlhf.pipeline import report

METRICS = ["gold", "proxy_pick", "diversity"]
RUNS = ["base", "rocm-none-b0-s0", "rocm-kl-b1-s0", "rocm-kl-b10-s0", "rocm-js-b1-s0", "rocm-js-b10-s0", "rlcm-s0"]


def score_table(split: str, best: dict[str, str], n_prompts: int = 6) -> pd.DataFrame:
    """Scores of every run on ``n_prompts`` prompts x 2 sample seeds; per divergence the arm in ``best`` has the
    highest gold (0.8, the other beta 0.5, the rest 0.3 to 0.4)."""
    rng = np.random.default_rng(0)
    prefix = "val-" if split == "val" else ""
    rows = []
    for run_id in RUNS:
        run = runs.parse_run(run_id)
        for p in range(n_prompts):
            for s in range(2):
                for metric in METRICS:
                    if run.method == "rocm" and run.divergence != runs.UNREGULARISED and metric == "gold":
                        level = 0.8 if best[run.divergence] == run.arm else 0.5
                    else:
                        level = 0.3 + 0.1 * (run.method == "rlcm")
                    rows.append({"run_id": run_id, **run.identity(), "prompt_id": f"{prefix}sbx-{p:04d}",
                                 "sample_seed": s, "prompt": f"prompt {p}", "metric": metric,
                                 "value": level + 0.01 * rng.standard_normal()})
    return pd.DataFrame(rows)[SCORE_COLUMNS]


VAL_BEST = {"kl": "rocm-kl-b1", "js": "rocm-js-b10"}
TEST_BEST = {"kl": "rocm-kl-b10", "js": "rocm-js-b1"}  # the opposite choice: choosing on test would show these


def with_comparisons(paths: dict, config: dict, tmp_path) -> dict:
    """``paths`` plus the comparisons the stats stage writes from its test scores (Table 1's daggers)."""
    out = {"comparisons": str(tmp_path / "comparisons.csv"), "summary": str(tmp_path / "seed_summary.csv")}
    run_stage(make_job(input={"scores": paths["scores"]}, output=out, config=config), report.stats)
    return {**paths, "comparisons": out["comparisons"]}


def choose(val_scores: str, config: dict, tmp_path) -> str:
    """The choose_settings stage on a validation score table: the path of its chosen.csv."""
    out = str(tmp_path / "chosen.csv")
    run_stage(make_job(input={"scores": val_scores}, output=[out], config=config), report.choose_settings)
    return out


@pytest.fixture
def tables(tmp_path, config):
    paths = {"scores": tmp_path / "all.csv", "val_scores": tmp_path / "val.csv"}
    score_table("test", TEST_BEST).to_csv(paths["scores"], index=False)
    score_table("val", VAL_BEST).to_csv(paths["val_scores"], index=False)
    paths = {k: str(v) for k, v in paths.items()}
    paths["chosen"] = choose(paths["val_scores"], config, tmp_path)
    return with_comparisons(paths, config, tmp_path)


@pytest.fixture
def config():
    return validate_config({"figures": {"n_boot": 20, "n_flips": 200},
                            "evaluation": {"metrics": ["proxy_pick", "gold"]},
                            "rocm": {"divergences": ["kl", "js"], "betas": {"kl": [1.0, 10.0], "js": [1.0, 10.0]}}})


def test_the_two_tables_choose_differently(tables):
    from rocm_rlhf.analysis.arms import choose_arms

    assert choose_arms(pd.read_csv(tables["val_scores"]), "gold") == VAL_BEST
    assert choose_arms(pd.read_csv(tables["scores"]), "gold") == TEST_BEST
    chosen = pd.read_csv(tables["chosen"])  # the choose_settings stage's file: the validation choice
    assert dict(zip(chosen["divergence"], chosen["arm"])) == VAL_BEST
    assert runs.read_chosen(tables["chosen"]) == {"kl": "1", "js": "10"}


def test_table1_rows_are_the_betas_chosen_on_validation(tables, config, tmp_path):
    out = {k: str(tmp_path / "fig" / f"table1.{k}") for k in ("md", "tex", "csv")}
    run_stage(make_job(input=tables, output=out, config=config), report.table1)
    t1 = pd.read_csv(out["csv"])
    shown = set(t1["arm"])
    assert {"rocm-kl-b1", "rocm-js-b10"} <= shown and not {"rocm-kl-b10", "rocm-js-b1"} & shown
    assert {"base", "rocm-none-b0", "rlcm"} <= shown
    # the cells are the test scores of the chosen arms
    test = pd.read_csv(tables["scores"])
    kl_gold = t1[(t1["arm"] == "rocm-kl-b1") & (t1["metric"] == "gold")]["mean"].item()
    assert kl_gold == pytest.approx(test[(test["arm"] == "rocm-kl-b1") & (test["metric"] == "gold")]["value"].mean())
    legend = open(out["md"], encoding="utf-8").read().rstrip("\n").splitlines()[-1]
    assert "validation prompts" in legend and "of these images (optimistic)" not in legend


def test_the_figures_take_the_betas_chosen_on_validation(tables, config, tmp_path, monkeypatch):
    import rocm_rlhf.analysis.figures as figures
    import rocm_rlhf.analysis.logs as logs

    seen = {}
    monkeypatch.setattr(logs, "load_curves", lambda dirs: pd.DataFrame())
    monkeypatch.setattr(figures, "fig_efficiency",
                        lambda curves, stem, metrics, chosen_betas=None: seen.update(eff=chosen_betas))
    monkeypatch.setattr(figures, "load_gallery_images", lambda samples, n: (seen.update(gallery=samples), ([], []))[1])
    monkeypatch.setattr(figures, "fig_divergence_gallery", lambda images, prompts, stem: None)
    job = make_job(input={"chosen": tables["chosen"], "curves": [str(tmp_path / "r" / "curve.csv")]},
                   output={"pdf": str(tmp_path / "eff.pdf")}, config=config)
    run_stage(job, report.fig_efficiency)
    assert seen["eff"] == {"kl": 1.0, "js": 10.0}
    samples = [f"results/samples/test/{r}/images.npz" for r in RUNS]
    job = make_job(input={"chosen": tables["chosen"], "samples": samples},
                   output={"pdf": str(tmp_path / "gallery.pdf")}, config=config)
    run_stage(job, report.fig_divergence_gallery)
    assert seen["gallery"] == {"base": "results/samples/test/base/images.npz",
                               "rocm-none-b0": "results/samples/test/rocm-none-b0-s0/images.npz",
                               "rocm-kl-b1": "results/samples/test/rocm-kl-b1-s0/images.npz",
                               "rocm-js-b10": "results/samples/test/rocm-js-b10-s0/images.npz"}


def test_table1_without_regularised_arms(tmp_path, config):
    """Only beta = 0 and the controls (no divergence run): nothing to choose, Table 1 shows what there is."""
    paths = {}
    for name, split in (("scores", "test"), ("val_scores", "val")):
        table = score_table(split, TEST_BEST)
        table = table[~table["arm"].str.startswith(("rocm-kl", "rocm-js"))]
        paths[name] = str(tmp_path / f"{name}.csv")
        table.to_csv(paths[name], index=False)
    paths["chosen"] = str(tmp_path / "chosen.csv")  # nothing to choose from: a chosen file without rows
    pd.DataFrame(columns=list(runs.CHOSEN_COLUMNS)).to_csv(paths["chosen"], index=False)
    out = {k: str(tmp_path / f"table1.{k}") for k in ("md", "tex", "csv")}
    run_stage(make_job(input=with_comparisons(paths, config, tmp_path), output=out, config=config), report.table1)
    assert set(pd.read_csv(out["csv"])["arm"]) == {"base", "rocm-none-b0", "rlcm"}
    assert "chosen" not in open(out["md"], encoding="utf-8").read()
