"""The reparameterised consistency sampler against diffusers, finite differences and its own invariants."""

from __future__ import annotations

import pytest
import torch

from rocm_rlhf.models import load_lcm_pipeline
from rocm_rlhf.samplers.common import decode_latents, encode_prompts, gaussian_log_prob
from rocm_rlhf.samplers.consistency import (
    adapter_disabled,
    consistency_sample,
    consistency_transition,
    divergence_per_step,
    draw_noise,
    lcm_timesteps,
)
from rocm_rlhf.training.lora import add_lora

PROMPTS = ["a red circle on the left", "a blue square at the top", "a green triangle"]


@pytest.mark.parametrize("num_steps", [1, 2, 4])
def test_matches_diffusers_lcm_pipeline(tiny_lcm_dir, num_steps):
    """Without gradients, the same images as LatentConsistencyModelPipeline for the same latents and noise."""
    pipe = load_lcm_pipeline(tiny_lcm_dir)
    shape = (len(PROMPTS), 4, 8, 8)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    ref_latents = pipe(PROMPTS, num_inference_steps=num_steps, guidance_scale=3.0, latents=latents.clone(),
                       generator=torch.Generator().manual_seed(7), output_type="latent").images
    ref_images = pipe(PROMPTS, num_inference_steps=num_steps, guidance_scale=3.0, latents=latents.clone(),
                      generator=torch.Generator().manual_seed(7), output_type="pt").images
    noise = draw_noise(shape, num_steps, torch.Generator().manual_seed(7))
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS)
    with torch.no_grad():
        traj = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=num_steps, guidance_scale=3.0,
                                  latents=latents, noise=noise)
        images = decode_latents(pipe.vae, traj.final)
    torch.testing.assert_close(traj.final, ref_latents, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(images, ref_images, rtol=1e-5, atol=1e-5)
    assert len(traj.means) == num_steps and len(traj.next_states) == num_steps - 1


def test_timesteps_are_diffusers_lcm_schedule(tiny_lcm_dir):
    pipe = load_lcm_pipeline(tiny_lcm_dir)
    assert lcm_timesteps(pipe.scheduler, 4) == [999, 759, 499, 259]


def test_guidance_changes_output(tiny_lcm_dir):
    pipe = load_lcm_pipeline(tiny_lcm_dir)
    # a random UNet ignores the w-embedding unless cond_proj is non-trivial; it is random here, so outputs differ
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS)
    lat = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = draw_noise(lat.shape, 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=2, guidance_scale=1.5, latents=lat,
                               noise=noise).final
        b = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=2, guidance_scale=8.0, latents=lat,
                               noise=noise).final
    assert (a - b).abs().max() > 1e-4


def _lora_pipe(tiny_lcm_dir, dtype=torch.float32, randomize=True):
    pipe = load_lcm_pipeline(tiny_lcm_dir, dtype=dtype)
    params = add_lora(pipe.unet, rank=4, alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], seed=0)
    if randomize:  # LoRA starts with B = 0: divergence and its gradient would vanish (DESIGN pitfalls)
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for p in params:
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    return pipe, params


def test_zero_lora_gives_base_images_and_zero_divergence(tiny_lcm_dir):
    base = load_lcm_pipeline(tiny_lcm_dir)
    pipe, _ = _lora_pipe(tiny_lcm_dir, randomize=False)
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS)
    lat = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = draw_noise(lat.shape, 4, torch.Generator().manual_seed(0))
    traj = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=4, guidance_scale=3.0, latents=lat,
                              noise=noise, reference=True)
    with torch.no_grad():
        base_traj = consistency_sample(base.unet, base.scheduler, emb, num_steps=4, guidance_scale=3.0, latents=lat,
                                       noise=noise)
    assert torch.equal(traj.final.detach(), base_traj.final)
    for name in ("kl", "js", "hellinger", "fisher"):
        div = divergence_per_step(traj, name)
        assert div.shape == (3, 4)
        assert torch.count_nonzero(div) == 0


def test_reparameterised_gradient_matches_finite_differences(tiny_lcm_dir):
    """d/dtheta of a loss of the final latents plus a KL term, through all K steps, in float64."""
    pipe, params = _lora_pipe(tiny_lcm_dir, dtype=torch.float64)
    pipe.unet.to(torch.float64)
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS[:2]).double()
    lat = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = draw_noise(lat.shape, 3, torch.Generator().manual_seed(1), dtype=torch.float64)
    weights = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def loss_fn():
        traj = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=3, guidance_scale=3.0, latents=lat,
                                  noise=noise, reference=True)
        return (traj.final * weights).sum() + 0.3 * divergence_per_step(traj, "kl").sum()

    loss = loss_fn()
    grads = torch.autograd.grad(loss, params)
    # check several coordinates of several LoRA matrices (A of the first, B of the last ...)
    checks = [(0, (0, 0)), (1, (1, 2)), (len(params) - 1, (0, 1)), (len(params) // 2, (2, 0))]
    eps = 1e-6
    for pi, idx in checks:
        p = params[pi]
        with torch.no_grad():
            old = p[idx].item()
            p[idx] = old + eps
            up = loss_fn().item()
            p[idx] = old - eps
            down = loss_fn().item()
            p[idx] = old
        fd = (up - down) / (2 * eps)
        assert grads[pi][idx].item() == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_gradient_checkpointing_and_truncation(tiny_lcm_dir):
    """Checkpointed gradients equal plain ones; truncation removes the early steps' contribution only."""
    pipe, params = _lora_pipe(tiny_lcm_dir)
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS)
    lat = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = draw_noise(lat.shape, 4, torch.Generator().manual_seed(1))

    def grads(**kw):
        traj = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=4, guidance_scale=3.0, latents=lat,
                                  noise=noise, reference=True, **kw)
        loss = traj.final.square().mean() + divergence_per_step(traj, "kl").sum()
        return torch.autograd.grad(loss, params)

    plain = grads()
    ckpt = grads(checkpoint=True)
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    trunc = grads(grad_steps=1)
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(plain, trunc))
    full = grads(grad_steps=4)
    for a, b in zip(plain, full):
        torch.testing.assert_close(a, b)


def _saved_bytes(pipe, emb, num_steps, **kw) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one regularised chain (a checkpointed call keeps
    only its inputs here: its inner activations are dropped and recomputed)."""
    lat = torch.randn(len(emb), 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = draw_noise(lat.shape, num_steps, torch.Generator().manual_seed(1))
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        traj = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=num_steps, guidance_scale=3.0,
                                  latents=lat, noise=noise, reference=True, **kw)
        traj.final.square().mean() + divergence_per_step(traj, "kl").sum()
    return total[0]


def test_checkpointing_also_drops_the_reference_activations(tiny_lcm_dir):
    """At beta > 0 gradients flow through the reference's transitions, so without checkpointing them the chain keeps
    the reference UNet's activations for all K steps (the old code: checkpointing covered the policy only). With
    checkpointing, what is kept is a few latent-sized tensors per step: at K = 8 less than a quarter of one UNet
    call's activations in all, where each extra step would otherwise add two calls' worth."""
    pipe, _ = _lora_pipe(tiny_lcm_dir)
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS)
    one_call = _saved_bytes(pipe, emb, 2) / 4  # plain K = 2: two policy and two reference UNet calls
    kept = {k: _saved_bytes(pipe, emb, k, checkpoint=True) for k in (2, 8)}
    assert kept[8] < 0.25 * one_call, (kept, one_call)
    assert kept[8] - kept[2] < 0.25 * one_call, (kept, one_call)


def test_log_probs_of_taken_steps(tiny_lcm_dir):
    pipe, _ = _lora_pipe(tiny_lcm_dir)
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS)
    lat = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = draw_noise(lat.shape, 4, torch.Generator().manual_seed(1))
    with torch.no_grad():
        traj = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=4, guidance_scale=3.0, latents=lat,
                                  noise=noise)
    lp = traj.log_probs()
    assert lp.shape == (3, 3)
    # with gradients: the taken states are constants (score-function gradient through the means only); were they
    # not detached, every log-prob would be -|eps|^2/2 + const, with zero gradient
    traj = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=4, guidance_scale=3.0, latents=lat,
                              noise=noise)
    params = [p for p in pipe.unet.parameters() if p.requires_grad]
    got = torch.autograd.grad(traj.log_probs().sum(), params, retain_graph=True)
    want = torch.autograd.grad(sum(gaussian_log_prob(n.detach(), m, sd).sum()
                                   for n, m, sd in zip(traj.next_states, traj.means, traj.stds)), params)
    assert max(g.abs().max().item() for g in got) > 0
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    # the taken step is mean + sigma * eps, so log p = -|eps|^2/2 - D log sigma - D/2 log 2 pi
    d = 4 * 8 * 8
    for n in range(3):
        sd = traj.stds[n]
        expect = -0.5 * noise[:, n].flatten(1).square().sum(1) - d * torch.log(torch.tensor(sd)) \
            - 0.5 * d * torch.log(torch.tensor(2 * torch.pi))
        torch.testing.assert_close(lp[:, n], expect, rtol=1e-4, atol=1e-3)


def test_transition_at_stored_states_reproduces_the_chain_bit_for_bit(tiny_lcm_dir):
    """consistency_transition at the states the sampler visited (as RLCM's PPO recomputes them) gives the sampler's
    x0, means, stds, next states and reference means exactly, including the regularised last step (t_next = t)."""
    pipe, _ = _lora_pipe(tiny_lcm_dir)
    g = torch.Generator().manual_seed(5)
    lat, noise = torch.randn(3, 4, 8, 8, generator=g), draw_noise((3, 4, 8, 8), 3, g)
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS)
    with torch.no_grad():
        traj = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=3, guidance_scale=3.0, latents=lat,
                                  noise=noise, reference=True)
        ts = traj.timesteps
        assert len(traj.means) == 3 and len(traj.next_states) == 2
        for n, t in enumerate(ts):
            last = n == len(ts) - 1
            x0, mean, std, x_next = consistency_transition(pipe.unet, pipe.scheduler, emb, traj.states[n], t,
                                                           t if last else ts[n + 1], 3.0,
                                                           noise=None if last else noise[:, n])
            assert torch.equal(x0, traj.x0[n]) and torch.equal(mean, traj.means[n]) and std == traj.stds[n]
            assert (x_next is None) if last else torch.equal(x_next, traj.next_states[n])
            with adapter_disabled(pipe.unet):
                ref = consistency_transition(pipe.unet, pipe.scheduler, emb, traj.states[n], t,
                                             t if last else ts[n + 1], 3.0)[1]
            assert torch.equal(ref, traj.ref_means[n])
            assert not torch.equal(ref, mean)  # the adapter matters, so the reference check is not vacuous
        # the formulas: mean = sqrt(abar_next) x0, std = sqrt(1 - abar_next), x_next = mean + std * noise
        abar = pipe.scheduler.alphas_cumprod
        torch.testing.assert_close(traj.means[0], abar[ts[1]].sqrt() * traj.x0[0])
        assert traj.stds[0] == pytest.approx(float((1 - abar[ts[1]]).sqrt()))
        torch.testing.assert_close(traj.next_states[0], traj.means[0] + traj.stds[0] * noise[:, 0])


def test_bad_arguments(tiny_lcm_dir):
    pipe = load_lcm_pipeline(tiny_lcm_dir)
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS)
    lat = torch.randn(3, 4, 8, 8)
    with pytest.raises(ValueError, match="noise must have shape"):
        consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=4, guidance_scale=3.0, latents=lat,
                           noise=torch.randn(3, 2, 4, 8, 8))
    with pytest.raises(ValueError, match="batch"):
        consistency_sample(pipe.unet, pipe.scheduler, emb[:2], num_steps=1, guidance_scale=3.0, latents=lat,
                           noise=torch.randn(3, 0, 4, 8, 8))
    with pytest.raises(ValueError, match="no LoRA adapter"):
        consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=1, guidance_scale=3.0, latents=lat,
                           noise=torch.randn(3, 0, 4, 8, 8), reference=True)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_consistency_function_matches_lcm_scheduler_for_each_prediction_type(tiny_lcm_dir, kind):
    """x0 of one step equals LCMScheduler.step's ``denoised`` for the same UNet output, per prediction type; an
    unimplemented prediction type is refused before any UNet call."""
    from diffusers import LCMScheduler

    from rocm_rlhf.samplers.consistency import consistency_transition, guidance_embedding

    pipe, _ = _lora_pipe(tiny_lcm_dir)
    sched = LCMScheduler.from_config(pipe.scheduler.config, prediction_type=kind)
    sched.set_timesteps(4)
    t = int(sched.timesteps[1])
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS)
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x0, *_ = consistency_transition(pipe.unet, sched, emb, x, t, t, 3.0)
        w = guidance_embedding(pipe.unet, 3.0, 3, x.device, emb.dtype)
        out = pipe.unet(x, t, timestep_cond=w, encoder_hidden_states=emb, return_dict=False)[0]
        sched._step_index = 1
        ref = sched.step(out, t, x, return_dict=True).denoised
    torch.testing.assert_close(x0, ref, rtol=1e-5, atol=1e-5)

    odd = LCMScheduler.from_config(pipe.scheduler.config)
    odd.register_to_config(prediction_type="flow")
    lat = torch.randn(3, 4, 8, 8)
    with pytest.raises(ValueError, match="prediction_type 'flow' is not implemented"):
        consistency_sample(pipe.unet, odd, emb, num_steps=2, guidance_scale=3.0, latents=lat,
                           noise=draw_noise(lat.shape, 2, None))


def test_adapter_switch_is_diffusers_switch(tiny_lcm_dir):
    """adapter_disabled switches the adapter layers it found once, as diffusers' disable_adapters/enable_adapters
    do: the same outputs, bit for bit, with the adapter off and on again, the adapters' requires_grad restored
    (gradients flow to them after the switch), and a new adapter seen."""
    from rocm_rlhf.samplers.consistency import adapter_layers

    pipe = load_lcm_pipeline(tiny_lcm_dir)
    params = add_lora(pipe.unet, 4, 8, ["to_q", "to_k", "to_v", "to_out.0"], seed=0)
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.05)
    unet = pipe.unet
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS[:2])
    t = torch.tensor([499, 499])

    def out():
        return unet(x, t, encoder_hidden_states=emb, timestep_cond=None).sample.detach()

    policy = out()
    unet.disable_adapters()
    base = out()
    unet.enable_adapters()
    assert not torch.equal(base, policy)  # the adapter matters
    with adapter_disabled(unet):
        assert torch.equal(out(), base)
        assert not any(p.requires_grad for p in params)  # as diffusers' switch leaves them
    assert torch.equal(out(), policy)
    assert all(p.requires_grad for p in params)
    unet(x, t, encoder_hidden_states=emb).sample.sum().backward()
    assert all(p.grad is not None for p in params)
    layers = adapter_layers(unet)
    assert layers is adapter_layers(unet) and len(layers) == sum(1 for n, _ in unet.named_modules()
                                                                    if n.endswith(("to_q", "to_k", "to_v", "to_out.0")))
    with pytest.raises(RuntimeError, match="boom"):  # an error inside leaves the adapter on
        with adapter_disabled(unet):
            raise RuntimeError("boom")
    assert torch.equal(out(), policy)
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q"]), adapter_name="other")
    assert adapter_layers(unet) is not layers  # another set of adapters: found again
