"""Watching a run (rocm_rlhf.training.monitor): TensorBoard event files hold log.csv's columns and the probe's sample
grids, log.csv is rewritten every train.log_every steps, monitoring changes nothing the run trains (also across a
resume), run.json records the device and the peak memory, and bad tracker settings fail at validation."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from conftest import assert_same_adapter
from test_probe import SPEC
from test_training import PROMPTS, _config  # noqa: F401 -- registers the test_redness reward
from rocm_rlhf.infra.config import ConfigError, validate_config
from rocm_rlhf.training.run import train_run


def _train(tmp_path, name, model_dir, max_steps=None, probe=SPEC, **train):
    train.setdefault("steps", 4)
    train.setdefault("checkpoint_every", 2)
    # the shipped configs' LoRA (rank 16, alpha 32) and batch of one
    cfg = _config(lora={"rank": 16, "alpha": 32}, batch_size=1, **train)
    return train_run(cfg, method="rocm", run_id=name, seed=0, run_dir=tmp_path / name, model_id=str(model_dir),
                     reward_name="test_redness", reward_kwargs={}, prompts=PROMPTS, max_steps=max_steps,
                     divergence="kl", beta=0.1, probe=probe)


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_tensorboard_holds_the_log_columns_at_every_step_and_the_sample_grids(tmp_path, tiny_lcm_dir):
    info = _train(tmp_path, "tb", tiny_lcm_dir, trackers=["tensorboard"], sample_every=1, steps=3)
    run = tmp_path / "tb"
    log = pd.read_csv(run / "log.csv")
    acc = _events(run)
    tags = acc.Tags()["scalars"]
    for col in ("loss", "reward_mean", "divergence_mean", "grad_norm", "reward_queries", "wall_s", "div_step_0"):
        events = acc.Scalars(f"train/{col}")
        assert [e.step for e in events] == [1, 2, 3], col
        np.testing.assert_allclose([e.value for e in events], log[col], rtol=1e-6, err_msg=col)
    assert "train/reward_std" not in tags  # NaN with a batch of one: left out, as log.csv leaves its cell empty
    images = acc.Images("samples")
    assert [e.step for e in images] == [0, 1, 2, 3]
    # a grid of the probe's 2 prompts x 2 seeds of the tiny LCM's 16x16 images, 2 px gaps, enlarged x2
    side = 2 * (2 * (16 + 2) + 2)
    assert (images[0].width, images[0].height) == (side, side)
    assert images[0].encoded_image_string != images[-1].encoded_image_string  # the policy moved
    assert info["device_name"] and info["peak_memory_bytes"] > 50 * 2**20  # a torch process on CPU: > 50 MiB RSS
    assert json.loads((run / "run.json").read_text())["peak_memory_kind"].startswith("peak resident set size")


def test_monitoring_changes_nothing_the_run_trains_even_across_a_resume(tmp_path, tiny_lcm_dir):
    _train(tmp_path, "off", tiny_lcm_dir, trackers=[], sample_every=0)
    _train(tmp_path, "on", tiny_lcm_dir, trackers=["tensorboard"], sample_every=1, log_every=1)
    _train(tmp_path, "resumed", tiny_lcm_dir, trackers=["tensorboard"], sample_every=1, max_steps=3)  # ckpt at 2
    _train(tmp_path, "resumed", tiny_lcm_dir, trackers=["tensorboard"], sample_every=1)
    off = pd.read_csv(tmp_path / "off" / "log.csv").drop(columns=["wall_s", "device_hours"])
    for run in ("on", "resumed"):
        assert_same_adapter(tmp_path / "off", tmp_path / run)
        pd.testing.assert_frame_equal(off, pd.read_csv(tmp_path / run / "log.csv").drop(
            columns=["wall_s", "device_hours"]))
    # the killed session's step 3 is purged: one event per step, the resumed run's values
    events = _events(tmp_path / "resumed").Scalars("train/loss")
    assert [e.step for e in events] == [1, 2, 3, 4]
    np.testing.assert_allclose([e.value for e in events], off["loss"], rtol=1e-6)
    assert not (tmp_path / "off" / "tb").exists()


def test_log_csv_is_rewritten_every_log_every_steps(tmp_path, tiny_lcm_dir, monkeypatch):
    """A job that dies at step 5 leaves the rows of the last multiple of log_every (no checkpoint yet: every 10)."""
    from rocm_rlhf.training.rocm import ROCM

    step_fn = ROCM.train_step

    def dies_at_5(self, ctx, step):
        if step == 5:
            raise RuntimeError("killed")
        return step_fn(self, ctx, step)

    monkeypatch.setattr(ROCM, "train_step", dies_at_5)
    for every, rows in ((2, 4), (3, 3)):
        with pytest.raises(RuntimeError, match="killed"):
            _train(tmp_path, f"every{every}", tiny_lcm_dir, probe=None, steps=10, checkpoint_every=10,
                   log_every=every, trackers=["tensorboard"])
        log = pd.read_csv(tmp_path / f"every{every}" / "log.csv")
        assert list(log["step"]) == list(range(1, rows + 1))
        assert [e.step for e in _events(tmp_path / f"every{every}").Scalars("train/loss")] == list(range(1, rows + 1))


def _validate(**train):
    return validate_config({"device": "cpu", "train": {"reward": "proxy_pick", **train}})


def test_tracker_settings_are_checked_before_any_job():
    assert _validate()["train"]["trackers"] == ["tensorboard"]  # the default
    with pytest.raises(ConfigError, match=r"train.trackers': unknown tracker 'tensorbord'; known: tensorboard, wandb"):
        _validate(trackers=["tensorbord"])
    with pytest.raises(ConfigError, match=r"train.sample_every': the sample grids are the held-out probe's images"):
        _validate(sample_every=5, probe={"prompts": 0})
    _validate(sample_every=0, probe={"prompts": 0})
    for name in ("wandb", "mlflow"):
        if importlib.util.find_spec(name) is None:
            with pytest.raises(ConfigError, match=rf"tracker '{name}' needs the Python package '{name}', which is not "
                                                  rf"installed: pip install {name}"):
                _validate(trackers=["tensorboard", name])


def test_monitoring_keys_rerun_nothing():
    from rocm_rlhf.infra.config import config_digest

    a = _validate()
    b = _validate(trackers=[], sample_every=3, tracker_project="elsewhere", log_every=5)
    assert config_digest(a, "train") == config_digest(b, "train")
