"""``log_prob_batch``: the baselines recompute the log-probs of several stored sampler steps (DPOK: several buffer
minibatches) in one UNet call, with the same losses, gradients, optimizer updates and logged statistics as one step
per call (rocm_rlhf.training.ppo.log_prob_chunks).

Every comparison runs one training step of a method on a fresh float64 copy of a tiny pipeline (the tiny models of
tests/test_baselines.py) at ``log_prob_batch`` = 1 (one step per call, the behaviour before the option), None (all
the steps of an update in one call) and a value whose chunks do not divide the update (a shorter last chunk). It
records the gradient handed to every optimizer update, the updated LoRA weights and the logged statistics.
"""

from __future__ import annotations

import pytest
import torch

from rocm_rlhf.training import ppo
from rocm_rlhf.training.d3po import D3PO
from rocm_rlhf.training.ddpo import DDPO
from rocm_rlhf.training.dpok import DPOK
from rocm_rlhf.training.rlcm import RLCM
from rocm_rlhf.training.run import make_method
from test_baselines import _config, _context, _flat, build_tiny_pair

torch.set_num_threads(1)

RTOL, ATOL = 1e-9, 1e-12  # float64: the chunks change the order of the sums only


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    # a briefly trained UNet is not needed for equal gradients: 10 pretraining steps keep the fixture fast
    return build_tiny_pair(tmp_path_factory.mktemp("tiny_pair_lpb"), pretrain_steps=10)


def count_unet_calls(unet) -> list[int]:
    """Wrap ``unet.forward``; the returned list holds the batch size of every call."""
    calls, forward = [], unet.forward

    def counted(sample, *args, **kwargs):
        calls.append(int(sample.shape[0]))
        return forward(sample, *args, **kwargs)

    unet.forward = counted
    return calls


def one_step(method: str, models, log_prob_batch, dtype=torch.float64, num_steps: int = 3, **fields) -> dict:
    """One training step of ``method`` at ``log_prob_batch``: the gradient of every ``ctx.update`` (flattened), the
    LoRA weights after the step, the logged statistics and the batch sizes of the UNet calls of the updates."""
    cls = {"ddpo": DDPO, "rlcm": RLCM, "d3po": D3PO, "dpok": DPOK}[method]
    ctx = _context(method, models, dtype=dtype, num_steps=num_steps, lora_scale=0.05)
    m = cls(log_prob_batch=log_prob_batch, **fields)
    m.setup(ctx)
    grads, calls, update = [], [], ctx.update

    def recording_update(loss):
        grads.append(_flat(torch.autograd.grad(loss, ctx.params, retain_graph=True)))
        update(loss)

    ctx.update = recording_update
    unet_calls = count_unet_calls(ctx.pipe.unet)
    orig_backward = ppo.GradientAccumulator.backward

    def backward(self, loss):  # the UNet calls made for the updates: those before each backward
        calls.append(list(unet_calls))
        unet_calls.clear()
        orig_backward(self, loss)

    rollout = m.rollout

    def counted_rollout(*args):  # the sampling calls are not the updates'
        out = rollout(*args)
        unet_calls.clear()
        return out

    m.rollout = counted_rollout
    ppo.GradientAccumulator.backward = backward
    try:
        stats = m.train_step(ctx, step=1)
    finally:
        ppo.GradientAccumulator.backward = orig_backward
    return {"grads": grads, "weights": _flat(ctx.params).detach(), "stats": stats, "calls": calls}


def assert_same_step(a: dict, b: dict, rtol=RTOL, atol=ATOL) -> None:
    assert len(a["grads"]) == len(b["grads"])  # the same number of optimizer updates
    for ga, gb in zip(a["grads"], b["grads"]):
        assert ga.norm() > 0
        torch.testing.assert_close(ga, gb, rtol=rtol, atol=atol)
    torch.testing.assert_close(a["weights"], b["weights"], rtol=rtol, atol=atol)
    assert a["stats"].keys() == b["stats"].keys()
    for key in a["stats"]:
        assert a["stats"][key] == pytest.approx(b["stats"][key], rel=rtol, abs=atol), key


# --------------------------------------------------------------------------------------------------- the chunks
def test_chunks_are_whole_units_at_most_log_prob_batch_latents():
    assert ppo.log_prob_chunks(3, 2, None) == [range(0, 3)]
    assert ppo.log_prob_chunks(3, 2, 1) == [range(0, 1), range(1, 2), range(2, 3)]  # below one unit: one unit
    assert ppo.log_prob_chunks(3, 2, 2) == [range(0, 1), range(1, 2), range(2, 3)]
    assert ppo.log_prob_chunks(3, 2, 5) == [range(0, 2), range(2, 3)]  # 2 units of 2 latents; the last shorter
    assert ppo.log_prob_chunks(3, 2, 6) == [range(0, 3)]
    assert ppo.log_prob_chunks(10, 4, 12) == [range(0, 3), range(3, 6), range(6, 9), range(9, 10)]


@pytest.mark.parametrize("cls", [DDPO, RLCM, D3PO, DPOK])
@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_a_bad_log_prob_batch_names_its_key(cls, bad):
    with pytest.raises(ValueError, match=rf"baselines\.{cls.config_name}\.log_prob_batch must be a positive integer"):
        cls(log_prob_batch=bad)


@pytest.mark.parametrize("method", ["rlcm", "ddpo", "d3po", "dpok"])
@pytest.mark.parametrize("value", [None, 7])
def test_the_config_key_reaches_the_method(method, value):
    """``baselines.<method>.log_prob_batch`` flows through ``from_config`` (ppo.baseline_fields passes every key of the
    block but the loop's lr, grad_clip and weight_decay) once the schema has it; absent, the dataclass default (1)."""
    cfg = _config()
    assert make_method(method, cfg).log_prob_batch == 1
    cfg["baselines"][method]["log_prob_batch"] = value
    assert make_method(method, cfg).log_prob_batch == value


# ---------------------------------------------------------------------------------------- the PPO accumulation
@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_ppo_accumulate_in_chunks_is_the_per_step_accumulation(models, fraction):
    """The chunked accumulation against the one before the option (one call per step, and per distinct step among
    the samples: ``by_step`` of the scalar-timestep log-prob), on random per-sample steps too (``fraction`` < 1)."""
    ctx = _context("ddpo", models, num_steps=5, lora_scale=0.05)
    m = DDPO(batch_size=4, sample_steps=5, guidance_scale=3.0, log_divergence=False)
    m.setup(ctx)
    roll = m.rollout(ctx, step=1)
    idx = torch.tensor([3, 0, 2])
    slots = ppo.train_step_slots(3, 5, fraction, torch.Generator().manual_seed(0))
    adv = torch.tensor([1.5, -0.5, 0.25, -2.0], dtype=torch.float64)
    old = roll.log_probs + 0.3 * torch.randn(roll.log_probs.shape, generator=torch.Generator().manual_seed(1),
                                             dtype=torch.float64)  # ratios away from 1, some clipped
    args = (idx, slots, old, adv, 0.25, 0.05, 1.0)  # scale 1/4 (latents 1 x 2 x 2), clip range, adv clip

    def accumulate(fn, log_prob_batch):
        acc = ppo.GradientAccumulator(ctx.params)
        st = ppo.ppo_accumulate(acc, fn, *args, log_prob_batch=log_prob_batch)
        return _flat(acc.grads), acc.value, st

    before = accumulate(ppo.by_step(lambda i, n: m.step_log_prob(ctx, roll, i, n)), 1)
    assert before[0].norm() > 0 and 0 < before[2]["clipfrac"] < 1
    per_sample = lambda i, s: m.step_log_prob(ctx, roll, i, s)  # noqa: E731
    for log_prob_batch in (1, None, 7):  # 7: chunks of 2 steps of 3 samples
        grad, value, st = accumulate(per_sample, log_prob_batch)
        torch.testing.assert_close(grad, before[0], rtol=RTOL, atol=ATOL)
        assert value == pytest.approx(before[1], rel=RTOL)
        assert st == pytest.approx(before[2], rel=RTOL, abs=ATOL)


# ---------------------------------------------------------------------------------------------- the four methods
# Two optimizer updates per step (two minibatches, or DPOK's two policy updates), three trained steps each
CASES = {
    "ddpo": dict(batch_size=4, sample_steps=3, guidance_scale=3.0, num_minibatches=2, log_divergence=False),
    "ddpo-fraction": dict(batch_size=4, sample_steps=5, guidance_scale=3.0, num_minibatches=2, log_divergence=False,
                          timestep_fraction=0.6),
    "rlcm": dict(batch_size=4, num_minibatches=2, log_divergence=False),
    "d3po": dict(prompts_per_step=4, sample_steps=3, guidance_scale=3.0, num_minibatches=2),
    "d3po-fraction": dict(prompts_per_step=4, sample_steps=5, guidance_scale=3.0, num_minibatches=2,
                          timestep_fraction=0.6),
    "dpok": dict(batch_size=3, sample_steps=3, guidance_scale=3.0, policy_updates=2, policy_batch_size=2,
                 grad_accumulation=3, buffer_size=9, kl_weight=0.5),
}
# a log_prob_batch whose chunks do not divide an update: 2 of the 3 units (steps, DPOK minibatches) per chunk
UNEVEN = {"ddpo": 5, "ddpo-fraction": 5, "rlcm": 5, "d3po": 9, "d3po-fraction": 9, "dpok": 5}


@pytest.mark.parametrize("case", list(CASES))
def test_one_training_step_is_the_same_whatever_log_prob_batch(models, case):
    method = case.split("-")[0]
    kw = CASES[case]
    num_steps = 4 if method == "rlcm" else 3  # RLCM: 3 transitions of the 4-step LCM chain
    per_step = one_step(method, models, 1, num_steps=num_steps, **kw)
    one_call = one_step(method, models, None, num_steps=num_steps, **kw)
    uneven = one_step(method, models, UNEVEN[case], num_steps=num_steps, **kw)
    assert_same_step(one_call, per_step)
    assert_same_step(uneven, per_step)
    # the calls: one unit (step of a minibatch / DPOK minibatch) per call at 1; all units of an update in one call at
    # None (RLCM: its LCM transition takes one timestep, so still one call per step, but one backward per update)
    units = {"ddpo": 3, "ddpo-fraction": 3, "rlcm": 3, "d3po": 3, "d3po-fraction": 3, "dpok": 3}[case]
    updates = 2
    assert len(per_step["calls"]) == units * updates
    assert len(one_call["calls"]) == updates
    assert len(uneven["calls"]) == 2 * updates
    if method != "rlcm":
        assert all(len(c) == 1 for c in per_step["calls"] + one_call["calls"] + uneven["calls"])
        assert one_call["calls"][0][0] == units * per_step["calls"][0][0]  # the batch of one call: all the units
        assert [c[0] for c in uneven["calls"][:2]] == [2 * per_step["calls"][0][0], per_step["calls"][0][0]]
    else:
        assert [len(c) for c in one_call["calls"]] == [units] * updates


def test_float32_at_the_sandbox_precision(models):
    """In float32 (the sandbox's dtype) the chunked calls agree to float32 precision: the gradients' difference is
    about 1e-5 of their norm (measured 4e-6 and 9e-6; the PPO terms of opposite advantages cancel, which raises the
    relative error of the sum; AdamW's first step divides by |g|, so the weights are not compared)."""
    kw = CASES["ddpo"]
    per_step = one_step("ddpo", models, 1, dtype=torch.float32, **kw)
    one_call = one_step("ddpo", models, None, dtype=torch.float32, **kw)
    assert len(per_step["grads"]) == len(one_call["grads"]) == 2
    for ga, gb in zip(one_call["grads"], per_step["grads"]):
        assert (ga - gb).norm() < 1e-4 * gb.norm()
        assert (ga - gb).abs().max() < 1e-4 * gb.abs().max()
    for key in per_step["stats"]:
        assert one_call["stats"][key] == pytest.approx(per_step["stats"][key], rel=1e-2, abs=1e-6), key


def test_one_step_per_call_is_the_old_computation_bit_for_bit(models):
    """At ``log_prob_batch`` 1 with every step trained, the per-sample-timestep call is the old scalar-timestep call
    (``by_step``) bit for bit, in float32."""
    ctx = _context("ddpo", models, dtype=torch.float32, num_steps=4, lora_scale=0.05)
    m = DDPO(batch_size=4, sample_steps=4, guidance_scale=3.0, log_divergence=False)
    m.setup(ctx)
    roll = m.rollout(ctx, step=1)
    idx, slots = torch.tensor([3, 0, 2]), torch.arange(4).expand(3, -1)
    adv = torch.tensor([1.5, -0.5, 0.25, -2.0], dtype=torch.float64)
    out = []
    for fn in (ppo.by_step(lambda i, n: m.step_log_prob(ctx, roll, i, n)),
               lambda i, s: m.step_log_prob(ctx, roll, i, s)):
        acc = ppo.GradientAccumulator(ctx.params)
        st = ppo.ppo_accumulate(acc, fn, idx, slots, roll.log_probs, adv, 0.25, 1e-4, 5.0, log_prob_batch=1)
        out.append((_flat(acc.grads), acc.value, st))
    assert out[0][0].norm() > 0
    assert torch.equal(out[0][0], out[1][0]) and out[0][1] == out[1][1] and out[0][2] == out[1][2]
