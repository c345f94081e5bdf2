"""The held-out probe of a training run (rocm_rlhf.training.probe): scores at step 0 and every checkpoint in
curve.csv, the same as sampling the saved weights afresh, survives a resume, and changes nothing the run trains."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import assert_same_adapter
from test_training import PROMPTS, _config  # noqa: F401 -- registers the test_redness reward
from rocm_rlhf.models import load_lcm_pipeline
from rocm_rlhf.rewards import load_scorer
from rocm_rlhf.training.probe import CURVE_COLUMNS, HeldOutProbe
from rocm_rlhf.training.run import train_run

SPEC = {"prompts": [["val-0000", "a yellow triangle"], ["val-0001", "a green circle at the bottom"]],
        "images_per_prompt": 2, "sampler": {"generator": "lcm", "num_steps": 3, "guidance_scale": 3.0},
        "metrics": {"test_redness": {}}, "batch_size": 3}


def _train(tmp_path, name, model_dir, probe=SPEC, max_steps=None, steps=6):
    # alpha != rank (the shipped configs' 16 / 32): a saved adapter that reloads at another strength shows here
    cfg = _config(steps=steps, lora={"rank": 4, "alpha": 8})
    return train_run(cfg, method="rocm", run_id=name, seed=0, run_dir=tmp_path / name, model_id=str(model_dir),
                     reward_name="test_redness", reward_kwargs={}, prompts=PROMPTS, max_steps=max_steps,
                     divergence="kl", beta=0.1, probe=probe)


def test_probe_rows_at_step_0_and_each_checkpoint_match_the_weights_then(tmp_path, tiny_lcm_dir):
    _train(tmp_path, "probed", tiny_lcm_dir)
    curve = pd.read_csv(tmp_path / "probed" / "curve.csv")
    assert list(curve.columns) == list(CURVE_COLUMNS)
    assert list(curve["step"]) == [0, 2, 4, 6] and (curve["metric"] == "test_redness").all()
    assert (curve["n_images"] == 4).all() and list(curve["reward_queries"]) == [0, 6, 12, 18]
    log = pd.read_csv(tmp_path / "probed" / "log.csv").set_index("step")
    assert curve.loc[curve["step"] == 6, "device_hours"].item() == log.loc[6, "device_hours"]  # rows carry the cost
    # step 0 is the untrained model, the last row the saved adapter: sampled afresh as the evaluation does
    reward = load_scorer("test_redness")
    for step, adapter in ((0, None), (6, tmp_path / "probed" / "adapter")):
        pipe = load_lcm_pipeline(tiny_lcm_dir)
        if adapter is not None:
            pipe.load_lora_weights(str(adapter))
        fresh = HeldOutProbe.from_spec(SPEC, reward_name="test_redness", reward=reward, device="cpu")(pipe, "cpu")
        assert curve.loc[curve["step"] == step, "mean"].item() == pytest.approx(fresh["test_redness"], abs=1e-6)
    assert curve["mean"].nunique() > 1  # the policy moved


def test_the_probe_time_is_not_counted_as_training(tmp_path, tiny_lcm_dir, monkeypatch):
    """A probe that takes 1000 s of the training loop's clock each time (a clock that jumps while the probe samples,
    so that the test does not depend on the machine's load) leaves the run's wall clock below one probe's time."""
    import time
    import types

    from rocm_rlhf.training import loop

    jump = [0.0]
    clock = types.SimpleNamespace(time=lambda: time.time() + jump[0], strftime=time.strftime)
    monkeypatch.setattr(loop, "time", clock)
    slow = HeldOutProbe.sample

    def slow_probe(self, pipe):
        jump[0] += 1000.0
        return slow(self, pipe)

    monkeypatch.setattr(HeldOutProbe, "sample", slow_probe)
    _train(tmp_path, "slow", tiny_lcm_dir)  # 4 probes: 4000 s of the loop's clock, counted or not
    log = pd.read_csv(tmp_path / "slow" / "log.csv")
    assert jump[0] == 4000.0 and log["wall_s"].iloc[-1] < 1000.0  # the six tiny steps alone: seconds


def test_a_checkpoint_made_under_another_probe_is_not_resumed(tmp_path, tiny_lcm_dir, capfd):
    _train(tmp_path, "run", tiny_lcm_dir, probe=None, max_steps=3)  # checkpoint at step 2, no curve rows
    _train(tmp_path, "run", tiny_lcm_dir)
    assert "set aside (stale" in capfd.readouterr().out
    assert list(pd.read_csv(tmp_path / "run" / "curve.csv")["step"]) == [0, 2, 4, 6]


def test_the_probe_changes_nothing_the_run_trains_and_survives_a_resume(tmp_path, tiny_lcm_dir):
    _train(tmp_path, "plain", tiny_lcm_dir, probe=None)
    _train(tmp_path, "probed", tiny_lcm_dir)
    assert_same_adapter(tmp_path / "plain", tmp_path / "probed")
    a, b = (pd.read_csv(tmp_path / r / "log.csv").drop(columns=["wall_s", "device_hours"]) for r in ("plain", "probed"))
    pd.testing.assert_frame_equal(a, b)
    assert len(pd.read_csv(tmp_path / "plain" / "curve.csv")) == 0  # header only without a probe
    _train(tmp_path, "resumed", tiny_lcm_dir, max_steps=3)  # killed after step 3: checkpoint at step 2
    _train(tmp_path, "resumed", tiny_lcm_dir)
    done, resumed = (pd.read_csv(tmp_path / r / "curve.csv") for r in ("probed", "resumed"))
    pd.testing.assert_frame_equal(done[["step", "reward_queries", "metric", "mean"]],
                                  resumed[["step", "reward_queries", "metric", "mean"]])


def test_no_prompts_means_no_probe():
    assert HeldOutProbe.from_spec(None, reward_name="x", reward=None, device="cpu") is None
    assert HeldOutProbe.from_spec({**SPEC, "prompts": []}, reward_name="x", reward=None, device="cpu") is None
