"""A saved adapter is the trained model: a fresh pipeline plus ``load_lora_weights(adapter)`` gives the same UNet
outputs and images as the model at the end of training, at the (rank, alpha) of every shipped config (alpha != rank:
with alpha = rank the old save, which dropped alpha, looked right), for the LCM (ROCM, RLCM) and for a Stable
Diffusion pipeline (DDPO, D3PO, DPOK)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import test_training  # noqa: F401 -- registers the test_redness reward
from conftest import REPO
from rocm_rlhf.infra.config import validate_config
from rocm_rlhf.models import load_lcm_pipeline, load_sd_pipeline
from rocm_rlhf.samplers.common import encode_prompts
from rocm_rlhf.training.lora import add_lora, load_lora_state_dict, save_lora

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
PROMPTS = ["a red circle on the left", "a blue square at the top"]


def shipped_lora_settings() -> list[tuple[int, float]]:
    """The distinct (rank, alpha) of config/*.yaml, each file's train.lora over the schema's defaults."""
    defaults = validate_config({})["train"]["lora"]
    out = set()
    for path in sorted((REPO / "config").glob("*.yaml")):
        lora = {**defaults, **((yaml.safe_load(path.read_text()) or {}).get("train", {}).get("lora") or {})}
        out.add((int(lora["rank"]), float(lora["alpha"])))
    out = sorted(out)
    assert any(a != r for r, a in out), "the shipped configs no longer test alpha != rank: add a case"
    return out


def build_tiny_sd(lcm_dir: Path, out: Path) -> Path:
    """A Stable Diffusion pipeline folder from the tiny LCM's parts (UNet without the guidance projection, DDIM)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    lcm = load_lcm_pipeline(lcm_dir)
    cfg = dict(lcm.unet.config)
    cfg["time_cond_proj_dim"] = None
    torch.manual_seed(3)
    unet = UNet2DConditionModel.from_config(cfg)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    StableDiffusionPipeline(vae=lcm.vae, text_encoder=lcm.text_encoder, tokenizer=lcm.tokenizer, unet=unet,
                            scheduler=sched, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def pipelines(tiny_lcm_dir, tmp_path_factory):
    return {"lcm": tiny_lcm_dir, "sd": build_tiny_sd(tiny_lcm_dir, tmp_path_factory.mktemp("sd") / "pipe")}


def _load(kind, path):
    return (load_lcm_pipeline if kind == "lcm" else load_sd_pipeline)(path)


@torch.no_grad()
def unet_outputs(pipe) -> torch.Tensor:
    """The UNet on fixed non-square latents (4 x 8 x 12), two prompts, one timestep."""
    g = torch.Generator().manual_seed(7)
    lat = torch.randn(2, pipe.unet.config.in_channels, 8, 12, generator=g)
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS)
    kw = {}
    if pipe.unet.config.time_cond_proj_dim is not None:
        kw["timestep_cond"] = torch.randn(2, pipe.unet.config.time_cond_proj_dim, generator=g)
    return pipe.unet(lat, 499, encoder_hidden_states=emb, return_dict=False, **kw)[0]


@pytest.mark.parametrize("kind", ["lcm", "sd"])
@pytest.mark.parametrize("rank,alpha", shipped_lora_settings())
def test_saved_adapter_reloads_at_full_strength(tmp_path, pipelines, kind, rank, alpha):
    from diffusers import LatentConsistencyModelPipeline, StableDiffusionPipeline

    trained = _load(kind, pipelines[kind])
    base_out = unet_outputs(trained)
    add_lora(trained.unet, rank, alpha, TARGETS, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a "trained" adapter: B moved away from its zero initialisation
        for name, p in trained.unet.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    trained_out = unet_outputs(trained)
    moved = (trained_out - base_out).abs().mean().item()
    assert moved > 1e-3
    cls = LatentConsistencyModelPipeline if kind == "lcm" else StableDiffusionPipeline
    save_lora(trained.unet, tmp_path / "adapter", cls)

    fresh = _load(kind, pipelines[kind])
    fresh.load_lora_weights(str(tmp_path / "adapter"))  # the call a user makes
    loaded_out = unet_outputs(fresh)
    # the old save reloaded at scale 1 instead of alpha / rank: it moved the output by rank / alpha of `moved`
    torch.testing.assert_close(loaded_out, trained_out, rtol=1e-5, atol=1e-6)


def _train_config(rank, alpha, **baselines):
    return validate_config({
        "device": "cpu",
        "model": {"num_steps": 2, "guidance_scale": 3.0},
        "train": {"steps": 3, "batch_size": 2, "lr": 0.05, "checkpoint_every": 100, "reward": "test_redness",
                  "lora": {"rank": rank, "alpha": alpha, "target_modules": TARGETS}},
        "baselines": {"reward_queries": 6, **baselines},
    })


@pytest.mark.parametrize("method,kind", [("rocm", "lcm"), ("ddpo", "sd")])
def test_trained_run_adapter_gives_the_end_of_training_images(tmp_path, pipelines, method, kind):
    """A real run (``train_run``): the run's adapter, loaded into a fresh pipeline, generates the same images as the
    model at the end of training (its last checkpoint's LoRA state applied through peft at the run's alpha)."""
    from rocm_rlhf.models import ddim_scheduler_for, latent_shape
    from rocm_rlhf.samplers.common import decode_latents
    from rocm_rlhf.samplers.consistency import consistency_sample, draw_noise
    from rocm_rlhf.samplers.diffusion import ddim_sample
    from rocm_rlhf.training.run import train_run
    from safetensors.torch import load_file

    rank, alpha = shipped_lora_settings()[0]
    cfg = _train_config(rank, alpha, ddpo={"batch_size": 2, "num_minibatches": 1, "sample_steps": 3})
    train_run(cfg, method=method, run_id="r", seed=0, run_dir=tmp_path / "r", model_id=str(pipelines[kind]),
              reward_name="test_redness", reward_kwargs={}, prompts=PROMPTS)

    @torch.no_grad()
    def images(pipe):
        g = torch.Generator().manual_seed(5)
        emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS)
        lat = torch.randn(2, *latent_shape(pipe), generator=g)
        if kind == "lcm":
            final = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=2, guidance_scale=3.0, latents=lat,
                                       noise=draw_noise(lat.shape, 2, g)).final
        else:
            neg = encode_prompts(pipe.tokenizer, pipe.text_encoder, [""])
            final = ddim_sample(pipe.unet, ddim_scheduler_for(pipe), emb, neg, num_steps=3, guidance_scale=3.0,
                                eta=1.0, latents=lat, noise=torch.randn(2, 3, *lat.shape[1:], generator=g),
                                return_log_probs=False).final
        return decode_latents(pipe.vae, final)

    end = _load(kind, pipelines[kind])
    add_lora(end.unet, rank, alpha, TARGETS)
    ckpt = sorted((tmp_path / "r" / "checkpoints").glob("step_*"))[-1]
    load_lora_state_dict(end.unet, load_file(ckpt / "adapter.safetensors"))
    fresh = _load(kind, pipelines[kind])
    fresh.load_lora_weights(str(tmp_path / "r" / "adapter"))
    base = images(_load(kind, pipelines[kind]))
    want, got = images(end), images(fresh)
    assert (want - base).abs().max() > 1e-4  # training moved the model
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
