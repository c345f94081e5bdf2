"""The score table (rocm_rlhf.analysis.scores: one validator for the statistics and the tables, the reader) and the
arm helpers the report stages use (controls, labels, the gallery's rows), all from rocm_rlhf.runs' vocabulary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rocm_rlhf import runs
from rocm_rlhf.analysis import arms, scores, stats, tables

RUN_IDS = ["base", "rocm-none-b0-s0", "rocm-kl-b1e-05-s0", "rocm-kl-b10-s0", "rlcm-s0", "ddpo-s0"]


def score_table(run_ids=RUN_IDS, metric="gold") -> pd.DataFrame:
    """A score table as the evaluation stage writes it: each run's identity from its id, SCORE_COLUMNS in order."""
    frames = []
    for i, run_id in enumerate(run_ids):
        units = pd.DataFrame({"prompt_id": ["p0", "p0", "p1", "p1"], "sample_seed": [0, 1, 0, 1],
                              "prompt": ["a red circle"] * 2 + ["a | b"] * 2})
        frame = units.assign(metric=metric, value=0.1 * i + np.arange(4) * 0.01)
        frames.append(frame.assign(run_id=run_id, **runs.parse_run(run_id).identity())[scores.SCORE_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def test_score_columns_are_the_runs_identity_and_the_key():
    assert scores.KEY_COLUMNS == ("run_id", "arm", "seed", "prompt_id", "sample_seed", "metric", "value")
    assert set(runs.parse_run("rlcm-s0").identity()) | {"run_id"} <= set(scores.SCORE_COLUMNS)
    assert scores.DIVERGENCE_VALUES == ("none", *runs.DIVERGENCES)
    table = score_table()
    assert scores.check_scores(table, ["gold"]) is table
    assert scores.check_scores(table[list(scores.KEY_COLUMNS)], arm_attributes=False) is not None


def test_read_scores_keeps_none_and_reads_empty_beta_as_nan(tmp_path):
    table = score_table()
    for run_id, part in table.groupby("run_id", sort=False):
        part.to_csv(tmp_path / f"{run_id}.csv", index=False)
    back = scores.read_scores([tmp_path / f"{r}.csv" for r in RUN_IDS])
    pd.testing.assert_frame_equal(back, table)
    assert (back.loc[back["method"] == "rlcm", "divergence"] == "none").all()
    assert back.loc[back["method"] == "rlcm", "beta"].isna().all()
    table.to_csv(tmp_path / "all.csv", index=False)
    pd.testing.assert_frame_equal(scores.read_scores(tmp_path / "all.csv"), table)  # one path, not a list


@pytest.mark.parametrize("arm_attributes", [False, True])
def test_one_validator_for_statistics_and_tables(arm_attributes):
    table = score_table()
    check = lambda t, *m: scores.check_scores(t, *m, arm_attributes=arm_attributes)  # noqa: E731
    with pytest.raises(ValueError, match="pandas DataFrame"):
        check(table.to_dict())
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['sample_seed'\]"):
        check(table.drop(columns="sample_seed"))
    with pytest.raises(ValueError, match="empty"):
        check(table.iloc[:0])
    bad = table.copy()
    bad.loc[3, "value"] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        check(bad)
    with pytest.raises(ValueError, match=r"share \(arm, seed"):
        check(pd.concat([table, table.iloc[:1]]))
    bad = table.copy()
    bad.loc[bad["run_id"] == "rlcm-s0", "run_id"] = "ddpo-s0"
    with pytest.raises(ValueError, match=r"several \(arm, seed\)"):
        check(bad)
    with pytest.raises(ValueError, match=r"metric\(s\) \['hps'\] are not in the score table"):
        check(table, ["gold", "hps"])


def test_arm_attributes_are_checked_for_tables_only():
    table = score_table()
    bad_method = table.assign(method=table["method"].replace("rlcm", "ppo"))
    bad_divergence = table.assign(divergence=table["divergence"].replace("kl", "tv"))
    bad_beta = table.assign(beta=np.where(table["arm"] == "rocm-kl-b10", -1.0, table["beta"]))
    for bad, words in ((bad_method, "unknown method"), (bad_divergence, "unknown divergence"),
                       (bad_beta, "missing or negative beta"), (table.drop(columns="beta"), "lacks column")):
        with pytest.raises(ValueError, match=words):
            scores.check_scores(bad)
        scores.check_scores(bad, arm_attributes=False)  # the statistics need no arm attributes
    assert len(stats.seed_summary(bad_method)) == len(RUN_IDS)


def test_tables_refuse_what_the_statistics_refuse(tmp_path):
    """The tables validate the whole table once, as the statistics do (not only the rows they show)."""
    bad = score_table()
    bad.loc[bad["arm"] == "ddpo", "value"] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        arms.choose_beta(bad, "gold")
    with pytest.raises(ValueError, match="NaN or infinite"):
        tables.table1(bad, [], "gold", ["base"], tmp_path / "t", n_boot=10)
    assert not (tmp_path / "t.csv").exists()


def test_arm_table_and_beta_text_from_the_vocabulary():
    table = arms.arm_table(score_table())
    assert list(table.index) == ["base", "rocm-none-b0", "rocm-kl-b1e-05", "rocm-kl-b10", "rlcm", "ddpo"]
    assert list(table["label"]) == ["Base", "ROCM (β=0)", "ROCM-KL (β=1e-05)", "ROCM-KL (β=10)", "RLCM", "DDPO"]
    assert list(table["group"]) == ["base", "rocm", "rocm", "rocm", "baseline", "baseline"]
    assert arms.choose_arms(score_table(), "gold") == {"kl": "rocm-kl-b10"}  # higher value of the two
    assert arms.choose_beta(score_table(), "gold", lower_is_better=True) == {"kl": 1e-05}


def test_comparison_arms_are_the_controls_of_runs():
    table = score_table()
    treatments, controls = arms.comparison_arms(table)
    assert controls == runs.control_arms(table["arm"]) == ["base", "ddpo", "rlcm"]  # base, then by name
    assert treatments == ["rocm-kl-b10", "rocm-kl-b1e-05", "rocm-none-b0"]


def test_label_of_arm_ids_and_other_keys():
    assert arms.label_of("base") == "Base"
    assert arms.label_of("rocm-none-b0") == "ROCM (β=0)"
    assert arms.label_of("rocm-hellinger-b1e-05") == "ROCM-Hellinger (β=1e-05)"
    assert arms.label_of("dpok") == "DPOK"
    for other in ("rocm-kl-b10.0", "rlcm-s0", "my images", "ppo"):
        assert arms.label_of(other) == other


def test_gallery_runs_use_the_runs_ids():
    rows = arms.gallery_runs({"kl": 10.0, "js": 1e-05}, 2, unregularised=True)
    assert rows == {"base": "base", "rocm-none-b0": "rocm-none-b0-s2", "rocm-kl-b10": "rocm-kl-b10-s2",
                    "rocm-js-b1e-05": "rocm-js-b1e-05-s2"}
    assert list(arms.gallery_runs({"kl": 0.1}, 0, unregularised=False)) == ["base", "rocm-kl-b0.1"]


def test_divergence_beta_table_columns_in_canonical_beta_text(tmp_path):
    long = tables.divergence_beta_table(score_table(), "gold", tmp_path / "db")
    assert list(long["arm"]) == ["rocm-none-b0", "rocm-kl-b1e-05", "rocm-kl-b10"]
    header = (tmp_path / "db.md").read_text().splitlines()[0]
    assert header == "| Divergence | β = 0 | β = 1e-05 | β = 10 |"
