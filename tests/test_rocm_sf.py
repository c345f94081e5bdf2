"""ROCM for rewards without gradients (rocm_rlhf.training.rocm_sf) and the JPEG-compressibility reward: the exact
identities of its estimators on the tiny LCM (float64), its errors, and short runs with a non-differentiable reward.

What is checked exactly: the log-densities recomputed at the fixed states reproduce the sampled transitions'; the
hybrid with a perfect surrogate (S = R, or R plus a constant) is ROCM's pathwise gradient bit for bit, since the
leave-one-out residual advantages vanish; the pure estimator's gradient reaches the adapter only through the means
at the fixed states. Not checked here: the pure estimator's unbiasedness by Monte Carlo (its variance is large: at
1,024 samples its cosine with the pathwise gradient was -0.1 and 0.8 at two seeds, measured once)."""

from __future__ import annotations

import io

import pandas as pd
import pytest
import torch

from rocm_rlhf.training.loop import Context, CountingScorer, Trainer, TrainSettings
from rocm_rlhf.training.rocm import ROCM
from rocm_rlhf.training.rocm_sf import ROCMScoreFunction, leave_one_out_advantages
from test_training import PROMPTS, Redness


@pytest.fixture(scope="module")
def policy(tiny_lcm_dir):
    from rocm_rlhf.models import load_lcm_pipeline
    from rocm_rlhf.training.lora import add_lora

    pipe = load_lcm_pipeline(tiny_lcm_dir, dtype=torch.float64)
    params = add_lora(pipe.unet, 4, 8, ["to_q", "to_k", "to_v", "to_out.0"], seed=0)  # alpha != rank
    g = torch.Generator().manual_seed(1)
    for name, p in pipe.unet.named_parameters():
        if p.requires_grad and "lora_B" in name:  # away from zero, so that every LoRA factor gets a gradient
            p.data = 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype)
    return pipe, params


def _grad(policy, method, n=6, seed=0, reward=None):
    pipe, params = policy
    s = TrainSettings(steps=1, batch_size=n, lr=0.0, seed=seed, grad_clip=0.0, num_steps=3, guidance_scale=3.0)
    ctx = Context(pipe=pipe, params=params, reward=CountingScorer(reward or Redness()), prompts=PROMPTS, settings=s,
                  device=torch.device("cpu"), optimizer=torch.optim.SGD(params, lr=0.0))
    out = method.train_step(ctx, 0)
    return torch.cat([p.grad.flatten() for p in params]).clone(), out


def test_leave_one_out_advantages():
    g = torch.tensor([1.0, 2.0, 6.0])
    assert torch.allclose(leave_one_out_advantages(g), torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5]))
    assert torch.equal(leave_one_out_advantages(torch.full((4,), 3.0)), torch.zeros(4))
    with pytest.raises(ValueError, match="at least 2 samples"):
        leave_one_out_advantages(torch.ones(1))


class Shifted(torch.nn.Module):
    """The surrogate R + c: its residual R - S is a constant, which the leave-one-out baseline removes."""

    def __init__(self, c):
        super().__init__()
        self.inner, self.c = Redness(), c

    def forward(self, images, prompts):
        return self.inner(images, prompts) + self.c


@pytest.mark.parametrize("divergence, beta", [("none", 0.0), ("kl", 0.5)])
def test_the_hybrid_with_a_perfect_surrogate_is_rocms_pathwise_gradient(policy, divergence, beta):
    rocm, _ = _grad(policy, ROCM(divergence=divergence, beta=beta))
    rel = lambda g: ((g - rocm).norm() / rocm.norm()).item()  # noqa: E731
    hybrid, out = _grad(policy, ROCMScoreFunction(divergence=divergence, beta=beta, surrogate=Redness()))
    assert torch.allclose(hybrid, rocm, rtol=1e-10, atol=1e-14), (hybrid - rocm).abs().max()  # residual exactly 0
    assert out["advantage_std"] == 0
    # R + c: the residual is -c up to the float32 rounding of the rewards, which the baseline removes (the advantages
    # left are rounding, about 1e-8)
    shifted, out = _grad(policy, ROCMScoreFunction(divergence=divergence, beta=beta, surrogate=Shifted(0.25)))
    assert out["advantage_std"] < 1e-6 and rel(shifted) < 1e-2, (out["advantage_std"], rel(shifted))
    # an imperfect surrogate adds a real score-function term: a different gradient on one batch
    half = type("Half", (torch.nn.Module,), {"forward": lambda self, i, p: 0.5 * Redness()(i, p)})()
    other, _ = _grad(policy, ROCMScoreFunction(divergence=divergence, beta=beta, surrogate=half))
    assert rel(other) > 0.05, rel(other)


def test_the_recomputed_log_densities_are_the_sampled_transitions(policy):
    from rocm_rlhf.samplers.common import encode_prompts
    from rocm_rlhf.samplers.consistency import consistency_sample, draw_noise

    pipe, params = policy
    s = TrainSettings(steps=1, batch_size=3, lr=0.0, seed=0, num_steps=3, guidance_scale=3.0)
    ctx = Context(pipe=pipe, params=params, reward=CountingScorer(Redness()), prompts=PROMPTS, settings=s,
                  device=torch.device("cpu"), optimizer=torch.optim.SGD(params, lr=0.0))
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    noise = draw_noise(lat.shape, 3, g).to(torch.float64)
    with torch.no_grad():
        traj = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=3, guidance_scale=3.0, latents=lat,
                                  noise=noise)
    method = ROCMScoreFunction()
    means = method.fixed_state_means(ctx, traj, emb, 2)
    assert all(torch.equal(a, b) for a, b in zip(means, traj.means[:2]))
    lp = method.log_prob(traj, means)
    assert torch.equal(lp, traj.log_probs().sum(1))
    assert lp.requires_grad and not traj.states[1].requires_grad  # gradients into the adapter, not the states


def test_the_pure_estimator_moves_the_adapter_and_logs_its_terms(policy):
    grad, out = _grad(policy, ROCMScoreFunction(divergence="kl", beta=0.5))
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert {"loss", "reward_mean", "divergence_mean", "advantage_std"} <= set(out)


def test_settings_that_cannot_work_are_one_clear_error(policy):
    from rocm_rlhf.rewards import load_scorer

    with pytest.raises(ValueError, match="surrogate must be a differentiable scorer"):
        ROCMScoreFunction(surrogate=load_scorer("jpeg_compressibility"))
    with pytest.raises(ValueError, match="unknown divergence"):
        ROCMScoreFunction(divergence="tv")
    with pytest.raises(ValueError, match="at least 2 samples"):
        _grad(policy, ROCMScoreFunction(), n=1)


def test_jpeg_compressibility_is_ddpos_definition():
    from PIL import Image

    from rocm_rlhf.rewards import load_scorer

    scorer = load_scorer("jpeg_compressibility")
    assert scorer.differentiable is False
    g = torch.Generator().manual_seed(0)
    images = torch.stack([torch.full((3, 24, 40), 0.5), torch.rand(3, 24, 40, generator=g)])  # non-square
    scores = scorer(images, ["a", "b"])
    for img, score in zip(images, scores):
        buf = io.BytesIO()
        arr = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(arr).save(buf, format="JPEG", quality=95)
        assert score.item() == pytest.approx(-buf.tell() / 1000.0)
    assert scores[0] > scores[1]  # a flat image compresses better than noise
    with pytest.raises(ValueError, match="quality must be in 1..100"):
        load_scorer("jpeg_compressibility", quality=0)


@pytest.mark.parametrize("surrogate", [None, "redness"])
def test_a_run_with_a_non_differentiable_reward(tmp_path, tiny_lcm_dir, surrogate):
    from rocm_rlhf.models import load_lcm_pipeline, pipeline_class
    from rocm_rlhf.rewards import load_scorer
    from rocm_rlhf.training.lora import add_lora

    pipe = load_lcm_pipeline(tiny_lcm_dir)
    params = add_lora(pipe.unet, 4, 8, ["to_q", "to_k", "to_v", "to_out.0"], seed=0)
    method = ROCMScoreFunction(divergence="kl", beta=0.1, surrogate=Redness() if surrogate else None)
    s = TrainSettings(steps=4, batch_size=3, lr=0.01, seed=0, checkpoint_every=2, num_steps=3, guidance_scale=3.0)
    info = Trainer(method, pipe, params, load_scorer("jpeg_compressibility"), PROMPTS, s, tmp_path / "run",
                   torch.device("cpu"), run_info={"run_id": "sf"}, pipeline_cls=pipeline_class("lcm")).run()
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert len(log) == 4 and log["loss"].notna().all() and (log["reward_mean"] < 0).all()  # minus kilobytes
    assert log["reward_queries"].iloc[-1] == 12
    assert ("surrogate_mean" in log) == bool(surrogate)
    assert info["run_id"] == "sf"


@pytest.mark.parametrize("surrogate", [False, True])
def test_gradient_checkpointing_gives_the_same_gradient(policy, surrogate):
    """The recomputed transitions at the sampled states, checkpointed (train.gradient_checkpointing, the paper
    setting's memory saving) or not, give the same gradient (float64), pure and hybrid, per-prompt groups of 2."""
    pipe, params = policy
    grads = []
    for ckpt in (False, True):
        s = TrainSettings(steps=1, batch_size=4, lr=0.0, seed=0, grad_clip=0.0, num_steps=3, guidance_scale=3.0,
                          gradient_checkpointing=ckpt)
        ctx = Context(pipe=pipe, params=params, reward=CountingScorer(Redness()), prompts=PROMPTS, settings=s,
                      device=torch.device("cpu"), optimizer=torch.optim.SGD(params, lr=0.0))
        method = ROCMScoreFunction(divergence="kl", beta=0.5, surrogate=Shifted(0.1) if surrogate else None,
                                   images_per_prompt=2)
        method.train_step(ctx, 0)
        grads.append(torch.cat([p.grad.flatten() for p in params]).clone())
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-12)
