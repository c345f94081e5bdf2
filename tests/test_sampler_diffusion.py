"""Tests of the stochastic DDIM sampler (rocm_rlhf.samplers.diffusion) on a tiny random UNet, in float64.

References are independent of the sampler: diffusers' own ``DDIMScheduler.step`` driven by a loop written here,
scipy's normal log-density, and the DDIM variance formula written out from ``alphas_cumprod``.
"""

import copy

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from scipy.stats import norm

from rocm_rlhf.samplers.diffusion import (
    DiffusionTrajectory,
    ddim_log_prob,
    ddim_sample,
    ddim_step_mean_std,
)

torch.set_num_threads(1)

B, T, L, D = 2, 4, 5, 32
SD_SCHEDULER = dict(  # Stable Diffusion 1.5's scheduler config (as DDIM)
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
    timestep_spacing="leading",
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random UNet2DConditionModel and an SD-like DDIMScheduler, saved with save_pretrained."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        cross_attention_dim=D,
        layers_per_block=1,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    d = tmp_path_factory.mktemp("tiny_sd")
    unet.save_pretrained(d / "unet")
    DDIMScheduler(**SD_SCHEDULER).save_pretrained(d / "scheduler")
    return d


@pytest.fixture(scope="module")
def unet(model_dir):
    m = UNet2DConditionModel.from_pretrained(model_dir / "unet", torch_dtype=torch.float64).eval()
    m.requires_grad_(False)
    return m


def make_scheduler(model_dir, **overrides):
    return DDIMScheduler.from_pretrained(model_dir / "scheduler", **overrides)


@pytest.fixture(scope="module")
def embeds():
    g = torch.Generator().manual_seed(1)
    cond = torch.randn(B, L, D, generator=g, dtype=torch.float64)
    uncond = torch.randn(1, L, D, generator=g, dtype=torch.float64)
    return cond, uncond


def start(seed=2, steps=T):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 4, 8, 8, generator=g, dtype=torch.float64)
    z = torch.randn(B, steps, 4, 8, 8, generator=g, dtype=torch.float64)
    return x, z


def reference_ddim(unet, scheduler, cond, uncond, x, noise, steps, w, eta):
    """diffusers' DDIM loop around scheduler.step (as StableDiffusionPipeline): states and step means."""
    scheduler.set_timesteps(steps)
    states, means = [x], []
    for n, t in enumerate(scheduler.timesteps):
        with torch.no_grad():
            if w == 1.0:
                eps = unet(x, t, encoder_hidden_states=cond).sample
            else:
                out = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond.expand(B, -1, -1), cond]))
                eps_u, eps_c = out.sample.chunk(2)
                if n == 0:  # guidance must matter, or this test could not see a wrong guidance formula
                    assert (eps_c - eps_u).abs().max() > 1e-3
                eps = eps_u + w * (eps_c - eps_u)
        kw = dict(eta=eta)
        mean = scheduler.step(eps, t, x, variance_noise=torch.zeros_like(x) if eta > 0 else None, **kw).prev_sample
        x = scheduler.step(eps, t, x, variance_noise=noise[:, n] if eta > 0 else None, **kw).prev_sample
        means.append(mean)
        states.append(x)
    return torch.stack(states, 1), torch.stack(means, 1)


def exact_scheduler(model_dir, **overrides):
    """The scheduler with its alphas_cumprod held in float64 (the same values, upcast exactly), so that diffusers'
    own step arithmetic runs in float64 and can be compared with the sampler at 1e-10 instead of float32 rounding."""
    s = make_scheduler(model_dir, **overrides)
    s.alphas_cumprod = s.alphas_cumprod.to(torch.float64)
    s.final_alpha_cumprod = torch.as_tensor(s.final_alpha_cumprod).to(torch.float64)
    return s


@pytest.mark.parametrize(
    "overrides, w, eta, logp",
    [
        ({}, 5.0, 1.0, True),  # SD 1.5 config, DDPO's eta = 1
        ({}, 1.0, 0.7, True),  # no guidance: conditional batch only
        ({"prediction_type": "v_prediction"}, 3.0, 0.5, True),
        ({"prediction_type": "sample"}, 2.0, 1.0, True),
        ({"clip_sample": True, "clip_sample_range": 0.5}, 7.5, 1.0, True),
        ({"set_alpha_to_one": True}, 4.0, 1.0, False),  # deterministic last step (final_alpha_cumprod = 1)
    ],
)
def test_reproduces_diffusers_ddim_step(model_dir, unet, embeds, overrides, w, eta, logp):
    cond, uncond = embeds
    x, z = start()
    ref_states, ref_means = reference_ddim(unet, exact_scheduler(model_dir, **overrides), cond, uncond, x, z, T, w, eta)
    traj = ddim_sample(
        unet,
        make_scheduler(model_dir, **overrides),
        cond,
        uncond if w != 1.0 else None,
        num_steps=T,
        guidance_scale=w,
        eta=eta,
        latents=x,
        noise=z,
        return_log_probs=logp,
    )
    assert isinstance(traj, DiffusionTrajectory)
    assert traj.latents.shape == (B, T + 1, 4, 8, 8) and traj.means.shape == (B, T, 4, 8, 8)
    assert traj.stds.shape == (T,) and traj.timesteps.shape == (T,)
    assert traj.timesteps.tolist() == [751, 501, 251, 1]
    assert traj.prev_timesteps.tolist() == [501, 251, 1, -249]
    torch.testing.assert_close(traj.latents, ref_states, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(traj.means, ref_means, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(traj.final, ref_states[:, -1], rtol=0, atol=0)
    assert (traj.log_probs is not None) == logp


def sigma_formula(alphas_cumprod, final, t, t_prev, eta):
    a = float(alphas_cumprod[t])
    ap = float(alphas_cumprod[t_prev]) if t_prev >= 0 else float(final)
    return eta * np.sqrt((1 - ap) / (1 - a)) * np.sqrt(1 - a / ap)


def test_log_prob_matches_scipy_and_sigma_formula(model_dir, unet, embeds):
    cond, uncond = embeds
    sched = make_scheduler(model_dir)
    traj = ddim_sample(unet, sched, cond, uncond, num_steps=T, guidance_scale=5.0, eta=0.8,
                       generator=torch.Generator().manual_seed(3))
    assert traj.log_probs.shape == (B, T)
    ac = sched.alphas_cumprod.numpy().astype(np.float64)
    for n, t in enumerate(traj.timesteps.tolist()):
        # sigma_t of DDIM with eta; the last step uses final_alpha_cumprod = alphas_cumprod[0] (set_alpha_to_one off)
        expected_std = sigma_formula(ac, ac[0], t, t - 1000 // T, 0.8)
        assert expected_std > 0
        np.testing.assert_allclose(float(traj.stds[n]), expected_std, rtol=1e-12)
        x_next = traj.latents[:, n + 1].numpy()
        ref = norm.logpdf(x_next, loc=traj.means[:, n].numpy(), scale=expected_std).reshape(B, -1).sum(1)
        np.testing.assert_allclose(traj.log_probs[:, n].numpy(), ref, rtol=1e-12)
    # the sampler's own draw is typical under its density: (x - mu) / sigma is standard normal over 4*B*C*H*W values
    z = (traj.latents[:, 1:] - traj.means) / traj.stds.view(1, T, 1, 1, 1)
    assert abs(float(z.mean())) < 0.15 and abs(float(z.std()) - 1) < 0.1


def test_eta_zero_is_deterministic_ddim(model_dir, unet, embeds):
    cond, uncond = embeds
    x, z = start()
    ref_states, _ = reference_ddim(unet, exact_scheduler(model_dir), cond, uncond, x, z, T, 6.0, 0.0)
    sched = make_scheduler(model_dir)
    traj = ddim_sample(unet, sched, cond, uncond, num_steps=T, guidance_scale=6.0, eta=0.0, latents=x,
                       noise=z, return_log_probs=False)
    torch.testing.assert_close(traj.latents, ref_states, rtol=1e-10, atol=1e-10)
    assert traj.log_probs is None and bool((traj.stds == 0).all())
    torch.testing.assert_close(traj.latents[:, 1:], traj.means, rtol=0, atol=0)
    # a deterministic chain has no density: asking for log-probs is an error, not NaN / inf
    with pytest.raises(ValueError, match="deterministic"):
        ddim_sample(unet, sched, cond, uncond, num_steps=T, guidance_scale=6.0, eta=0.0, latents=x)
    with pytest.raises(ValueError, match="deterministic"):
        ddim_log_prob(unet, sched, cond, uncond, traj.latents[:, 0], traj.latents[:, 1], traj.timesteps[0],
                      guidance_scale=6.0, eta=0.0)


def test_deterministic_last_step_with_set_alpha_to_one(model_dir, unet, embeds):
    cond, uncond = embeds
    sched = make_scheduler(model_dir, set_alpha_to_one=True)
    traj = ddim_sample(unet, sched, cond, uncond, num_steps=T, guidance_scale=3.0, eta=1.0,
                       generator=torch.Generator().manual_seed(4), return_log_probs=False)
    assert bool((traj.stds[:-1] > 0).all()) and float(traj.stds[-1]) == 0.0
    with pytest.raises(ValueError, match="set_alpha_to_one"):
        ddim_sample(unet, sched, cond, uncond, num_steps=T, guidance_scale=3.0, eta=1.0)
    # the stochastic steps still have log-probs
    lp = ddim_log_prob(unet, sched, cond, uncond, traj.latents[:, 0], traj.latents[:, 1], traj.timesteps[0],
                       guidance_scale=3.0, eta=1.0)
    assert lp.shape == (B,) and bool(torch.isfinite(lp).all())


def test_generator_reproducible(model_dir, unet, embeds):
    cond, uncond = embeds
    sched = make_scheduler(model_dir)
    kw = dict(num_steps=2, guidance_scale=2.0, eta=1.0)
    a = ddim_sample(unet, sched, cond, uncond, generator=torch.Generator().manual_seed(7), **kw)
    b = ddim_sample(unet, sched, cond, uncond, generator=torch.Generator().manual_seed(7), **kw)
    c = ddim_sample(unet, sched, cond, uncond, generator=torch.Generator().manual_seed(8), **kw)
    torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=0)
    assert not torch.allclose(a.latents, c.latents)
    assert not a.final.requires_grad and not a.log_probs.requires_grad


@pytest.fixture
def trainable_unet(unet):
    m = copy.deepcopy(unet)
    m.requires_grad_(True)
    return m


def test_recomputed_log_prob_equals_stored_and_has_gradients(model_dir, trainable_unet, embeds):
    cond, uncond = embeds
    unet = trainable_unet
    sched = make_scheduler(model_dir)
    kw = dict(guidance_scale=4.0, eta=1.0)
    traj = ddim_sample(unet, sched, cond, uncond, num_steps=T, generator=torch.Generator().manual_seed(5), **kw)
    assert not traj.log_probs.requires_grad
    for n in range(T):
        lp = ddim_log_prob(unet, sched, cond, uncond, traj.latents[:, n], traj.latents[:, n + 1],
                           traj.timesteps[n], **kw)
        assert lp.requires_grad
        torch.testing.assert_close(lp.detach(), traj.log_probs[:, n], rtol=1e-12, atol=0)
    # per-sample timesteps (DDPO shuffles the steps independently per sample)
    steps = torch.tensor([3, 1])
    rows = torch.arange(B)
    lp = ddim_log_prob(unet, sched, cond, uncond, traj.latents[rows, steps], traj.latents[rows, steps + 1],
                       traj.timesteps[steps], **kw)
    torch.testing.assert_close(lp.detach(), traj.log_probs[rows, steps], rtol=1e-12, atol=0)

    # gradient w.r.t. UNet parameters against a central finite difference (float64)
    n = 2
    args = (unet, sched, cond, uncond, traj.latents[:, n], traj.latents[:, n + 1], traj.timesteps[n])
    unet.zero_grad()
    ddim_log_prob(*args, **kw).sum().backward()
    for name in ("conv_out.bias", "conv_in.weight"):
        g = dict(unet.named_parameters())[name].grad
        assert g is not None and float(g.abs().max()) > 0, name
    # a cross-attention key projection: its gradient exists only if the text conditioning reaches the log-prob
    to_k = [p for k, p in unet.named_parameters() if k.endswith("attn2.to_k.weight")]
    assert to_k and float(to_k[0].grad.abs().max()) > 0
    p = unet.conv_out.bias
    analytic = float(p.grad[1])
    h = 1e-6
    with torch.no_grad():
        p[1] += h
        up = float(ddim_log_prob(*args, **kw).sum())
        p[1] -= 2 * h
        down = float(ddim_log_prob(*args, **kw).sum())
        p[1] += h
    np.testing.assert_allclose(analytic, (up - down) / (2 * h), rtol=1e-5)


def test_enable_grad_sampling(model_dir, trainable_unet, embeds):
    cond, uncond = embeds
    traj = ddim_sample(trainable_unet, make_scheduler(model_dir), cond, uncond, num_steps=2, guidance_scale=2.0,
                       eta=1.0, generator=torch.Generator().manual_seed(6), enable_grad=True)
    assert traj.final.requires_grad and traj.log_probs.requires_grad


def test_low_precision_model_keeps_float32_log_probs(model_dir, embeds):
    """A bfloat16 model (as fp16 SD on GPU): states stay in the model dtype, means / stds / log-probs are float32,
    and the recomputed log-prob still equals the stored one (it is evaluated at the stored, rounded state)."""
    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet", torch_dtype=torch.bfloat16).eval()
    cond, uncond = (e.to(torch.bfloat16) for e in embeds)
    sched = make_scheduler(model_dir)
    kw = dict(guidance_scale=3.0, eta=1.0)
    with torch.no_grad():
        traj = ddim_sample(unet, sched, cond, uncond, num_steps=2, generator=torch.Generator().manual_seed(1), **kw)
        assert traj.latents.dtype == torch.bfloat16 and traj.final.dtype == torch.bfloat16
        assert traj.means.dtype == traj.stds.dtype == traj.log_probs.dtype == torch.float32
        for n in range(2):
            lp = ddim_log_prob(unet, sched, cond, uncond, traj.latents[:, n], traj.latents[:, n + 1],
                               traj.timesteps[n], **kw)
            torch.testing.assert_close(lp, traj.log_probs[:, n], rtol=0, atol=0)
            ref = norm.logpdf(traj.latents[:, n + 1].double().numpy(), loc=traj.means[:, n].double().numpy(),
                              scale=float(traj.stds[n])).reshape(B, -1).sum(1)
            np.testing.assert_allclose(traj.log_probs[:, n].numpy(), ref, rtol=1e-4)


def test_step_mean_std_batched_timesteps_match_scalar(model_dir):
    sched = exact_scheduler(model_dir)
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    out = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    ts = sched.timesteps[[0, 5, 9]]
    mean, std, prev = ddim_step_mean_std(sched, out, ts, x, 1.0)
    assert std.shape == (3,) and prev.tolist() == [int(t) - 100 for t in ts]
    for i, t in enumerate(ts):
        m_i, s_i, _ = ddim_step_mean_std(sched, out[i : i + 1], t, x[i : i + 1], 1.0)
        torch.testing.assert_close(mean[i : i + 1], m_i, rtol=0, atol=0)
        assert float(s_i) == float(std[i])
        ref = sched.step(out[i : i + 1], t, x[i : i + 1], eta=1.0, variance_noise=torch.zeros_like(x[:1]))
        torch.testing.assert_close(m_i, ref.prev_sample, rtol=1e-12, atol=1e-12)


def test_bad_arguments(model_dir, unet, embeds):
    cond, uncond = embeds
    sched = make_scheduler(model_dir)
    kw = dict(guidance_scale=3.0, eta=1.0)

    def sample(**over):
        args = dict(num_steps=2, **kw)
        args.update(over)
        c = args.pop("cond", cond)
        u = args.pop("uncond", uncond)
        s = args.pop("sched", sched)
        return ddim_sample(unet, s, c, u, **args)

    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_steps"):
            sample(num_steps=bad)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="eta"):
            sample(eta=bad)
    with pytest.raises(ValueError, match="batch size mismatch"):
        sample(uncond=torch.zeros(3, L, D, dtype=torch.float64))
    with pytest.raises(ValueError, match="B = 2"):
        sample(latents=torch.zeros(3, 4, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="noise must be"):
        sample(noise=torch.zeros(B, 3, 4, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="negative_embeds"):
        sample(uncond=None)
    with pytest.raises(ValueError, match="same L, D"):
        sample(uncond=torch.zeros(1, L + 1, D, dtype=torch.float64))
    with pytest.raises(TypeError, match="DDIMScheduler"):
        sample(sched=DDPMScheduler(**{k: v for k, v in SD_SCHEDULER.items() if k != "set_alpha_to_one"}))

    traj = sample(generator=torch.Generator().manual_seed(0))
    x0, x1, t0 = traj.latents[:, 0], traj.latents[:, 1], traj.timesteps[0]
    with pytest.raises(ValueError, match="same shape"):
        ddim_log_prob(unet, sched, cond, uncond, x0, x1[:1], t0, **kw)
    with pytest.raises(ValueError, match="batch size mismatch"):
        ddim_log_prob(unet, sched, cond[:1], uncond, x0, x1, t0, **kw)
    with pytest.raises(ValueError, match="batch size mismatch"):
        ddim_log_prob(unet, sched, cond, uncond, x0, x1, traj.timesteps.repeat(2)[:3], **kw)
    with pytest.raises(ValueError, match="not in scheduler.timesteps"):
        ddim_log_prob(unet, sched, cond, uncond, x0, x1, int(t0) - 1, **kw)
    with pytest.raises(ValueError, match="eta"):
        ddim_log_prob(unet, sched, cond, uncond, x0, x1, t0, guidance_scale=3.0, eta=-1.0)
    fresh = make_scheduler(model_dir)
    with pytest.raises(ValueError, match="set_timesteps"):
        ddim_log_prob(unet, fresh, cond, uncond, x0, x1, t0, **kw)
