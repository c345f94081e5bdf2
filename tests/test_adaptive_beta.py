"""The adaptive beta (rocm_rlhf.training.adaptive_beta): the controller's arithmetic against its definition (Ziegler
et al. 2019's proportional controller in log space), its errors, and ROCM with it on the tiny LCM: beta logged per
step, moving the way the measured divergence asks, continued exactly by a resumed run."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rocm_rlhf.training.adaptive_beta import AdaptiveBeta
from rocm_rlhf.training.rocm import ROCM
from test_training import PROMPTS, _config  # the tiny LCM's ROCM setting (redness reward)


def test_the_update_is_the_clipped_log_ratio_times_the_gain():
    c = AdaptiveBeta(target=0.5, beta=2.0, gain=0.1, clip=1.0)
    assert c.update(0.5) == pytest.approx(2.0)  # on target: unchanged
    assert c.update(0.5 * math.e ** 0.3) == pytest.approx(2.0 * math.exp(0.1 * 0.3))  # above: beta rises
    b = c.beta
    assert c.update(0.5 * math.e ** -0.4) == pytest.approx(b * math.exp(-0.04))  # below: beta falls
    b = c.beta
    assert c.update(1e9) == pytest.approx(b * math.exp(0.1))  # the error is clipped at +-clip
    b = c.beta
    assert c.update(0.0) == pytest.approx(b * math.exp(-0.1))  # no divergence yet: the largest shortfall
    # to first order it is Ziegler et al.'s beta (1 + K e) with e the relative error
    c = AdaptiveBeta(target=1.0, beta=1.0, gain=0.1)
    assert c.update(1.01) == pytest.approx(1.0 * (1 + 0.1 * 0.01), rel=1e-5)  # second-order terms: 5e-6


def test_beta_stays_within_its_bounds_and_the_state_round_trips():
    c = AdaptiveBeta(target=1.0, beta=1.0, gain=1.0, beta_min=0.5, beta_max=4.0)
    for _ in range(10):
        c.update(100.0)
    assert c.beta == pytest.approx(4.0)
    for _ in range(10):
        c.update(0.0)
    assert c.beta == pytest.approx(0.5)
    d = AdaptiveBeta(target=1.0)
    d.load_state(c.state())
    assert d.beta == c.beta


@pytest.mark.parametrize("kwargs, message", [
    ({"target": 0.0}, "target must be a positive number"),
    ({"target": float("nan")}, "target must be a positive number"),
    ({"target": 1.0, "beta": 0.0}, "beta_min <= init_beta <= beta_max"),
    ({"target": 1.0, "gain": -1.0}, "gain and clip must be positive"),
])
def test_bad_settings_are_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveBeta(**kwargs)


def test_rocm_refuses_an_adaptive_beta_that_contradicts_itself():
    with pytest.raises(ValueError, match="divergence 'none'"):
        ROCM(divergence="none", target=1.0)
    with pytest.raises(ValueError, match="starts at adaptive.init_beta"):
        ROCM(divergence="kl", beta=10.0, target=1.0)
    with pytest.raises(ValueError, match="unknown adaptive-beta settings"):
        ROCM(divergence="kl", target=1.0, adaptive={"gian": 0.1})
    with pytest.raises(ValueError, match="without a target"):
        ROCM(divergence="kl", adaptive={"gain": 0.1})
    with pytest.raises(ValueError, match="not finite"):
        ROCM(divergence="kl", target=1.0).controller.update(float("nan"))


def _adaptive(tmp_path, name, model_dir, target, max_steps=None, **adaptive):
    from rocm_rlhf.training.run import train_run

    cfg = _config(steps=6, checkpoint_every=2, lora={"rank": 4, "alpha": 8})  # alpha != rank, as users run
    return train_run(cfg, method="rocm", run_id=name, seed=0, run_dir=tmp_path / name, model_id=str(model_dir),
                     reward_name=cfg["train"]["reward"], reward_kwargs={}, prompts=PROMPTS, max_steps=max_steps,
                     divergence="kl", target=target, adaptive=adaptive or None)


def test_rocm_logs_the_beta_it_used_and_moves_it_the_way_the_divergence_asks(tmp_path, tiny_lcm_dir):
    high = pd.read_csv(tmp_path / "high" / "log.csv") if _adaptive(
        tmp_path, "high", tiny_lcm_dir, target=1e6, init_beta=1.0) else None
    # a target far above any divergence: beta falls by the clipped factor every step
    assert high["adaptive_beta"].iloc[0] == 1.0
    assert high["adaptive_beta"].tolist() == pytest.approx([math.exp(-0.1 * i) for i in range(len(high))])
    low = pd.read_csv(tmp_path / "low" / "log.csv") if _adaptive(
        tmp_path, "low", tiny_lcm_dir, target=1e-12, init_beta=1.0) else None
    # a target below any nonzero divergence: after the first step (adapter still zero, divergence 0) beta rises
    assert low["divergence_mean"].iloc[0] == 0.0 and (low["divergence_mean"].iloc[1:] > 0).all()
    assert low["adaptive_beta"].iloc[1] == pytest.approx(math.exp(-0.1))
    assert low["adaptive_beta"].tolist()[2:] == pytest.approx([math.exp(-0.1 + 0.1 * i) for i in range(1, len(low) - 1)])


def test_a_resumed_run_continues_its_beta(tmp_path, tiny_lcm_dir):
    from conftest import assert_same_adapter

    _adaptive(tmp_path, "full", tiny_lcm_dir, target=1e-4, init_beta=3.0)
    _adaptive(tmp_path, "killed", tiny_lcm_dir, target=1e-4, init_beta=3.0, max_steps=3)  # checkpoint at step 2
    _adaptive(tmp_path, "killed", tiny_lcm_dir, target=1e-4, init_beta=3.0)  # resumes from it
    full, resumed = (pd.read_csv(tmp_path / n / "log.csv") for n in ("full", "killed"))
    assert full["adaptive_beta"].tolist() == resumed["adaptive_beta"].tolist()
    assert full["adaptive_beta"].nunique() > 2  # it did move
    assert_same_adapter(tmp_path / "full", tmp_path / "killed")
