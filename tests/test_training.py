"""ROCM training on a tiny latent LCM with a VAE built and saved by the test (the hub code path, offline)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_same_adapter
from rocm_rlhf.infra.config import validate_config
from rocm_rlhf.models import load_lcm_pipeline
from rocm_rlhf.rewards import Scorer, register
from rocm_rlhf.samplers.common import decode_latents, encode_prompts
from rocm_rlhf.samplers.consistency import consistency_sample, draw_noise
from rocm_rlhf.training.loop import TrainingDivergedError
from rocm_rlhf.training.run import train_run

PROMPTS = ["a red circle on the left", "a blue square at the top", "a green triangle"]


@register("test_redness")
class Redness(Scorer):
    """Differentiable toy reward: red minus the other channels (a random VAE still passes gradients)."""

    definition = "test: mean(R - (G + B) / 2)"

    def __init__(self, **_):
        super().__init__()

    def forward(self, images, prompts):
        return (images[:, 0] - 0.5 * (images[:, 1] + images[:, 2])).flatten(1).mean(1)


@register("test_nan")
class NanReward(Scorer):
    def __init__(self, **_):
        super().__init__()
        self.calls = 0

    def forward(self, images, prompts):
        self.calls += 1
        r = images.mean((1, 2, 3))
        return r * float("nan") if self.calls > 3 else r


def _config(**train):
    t = {"steps": 6, "batch_size": 3, "lr": 0.02, "checkpoint_every": 2, "lora": {"rank": 4, "alpha": 4},
         "reward": "test_redness"}
    t.update(train)
    return validate_config({"device": "cpu", "train": t, "model": {"num_steps": 3, "guidance_scale": 3.0}})


def _train(tmp_path, name, model_dir, beta=0.0, divergence="kl", max_steps=None, **train):
    cfg = _config(**train)
    return train_run(cfg, method="rocm", run_id=name, seed=0, run_dir=tmp_path / name, model_id=str(model_dir),
                     reward_name=cfg["train"]["reward"], reward_kwargs={}, prompts=PROMPTS, max_steps=max_steps,
                     divergence=divergence, beta=beta)


def _final_latents(pipe):
    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS)
    lat = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(123))
    noise = draw_noise(lat.shape, 3, torch.Generator().manual_seed(124))
    with torch.no_grad():
        traj = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=3, guidance_scale=3.0, latents=lat,
                                  noise=noise)
        return traj.final, decode_latents(pipe.vae, traj.final)


def test_rocm_raises_reward_and_writes_outputs(tmp_path, tiny_lcm_dir):
    info = _train(tmp_path, "rocm-kl-b0-s0", tiny_lcm_dir, steps=12, beta=0.0)
    run = tmp_path / "rocm-kl-b0-s0"
    log = pd.read_csv(run / "log.csv")
    for col in ("step", "wall_s", "device_hours", "reward_queries", "reward_mean", "reward_std", "divergence_mean",
                "div_step_0", "div_step_1", "div_step_2"):
        assert col in log.columns, col
    assert list(log["step"]) == list(range(1, 13))
    assert list(log["reward_queries"]) == [3 * s for s in range(1, 13)]
    assert log["reward_mean"].tail(3).mean() > log["reward_mean"].head(3).mean() + 0.01
    assert log["divergence_mean"].iloc[0] == 0.0 and log["divergence_mean"].iloc[-1] > 0  # LoRA B starts at 0
    meta = json.loads((run / "run.json").read_text())
    assert meta["device_hours_unit"] == "cpu_core_hours" and meta["seed"] == 0
    assert meta["final"]["reward_queries"] == 36 and "batch arithmetic" in meta["batch_arithmetic"]
    assert info["final"]["reward_mean_last10pct"] == pytest.approx(log["reward_mean"].iloc[-1])


def test_adapter_loads_with_load_lora_weights_and_changes_images(tmp_path, tiny_lcm_dir):
    _train(tmp_path, "run", tiny_lcm_dir, steps=4)
    base = load_lcm_pipeline(tiny_lcm_dir)
    _, base_images = _final_latents(base)
    pipe = load_lcm_pipeline(tiny_lcm_dir)
    pipe.load_lora_weights(str(tmp_path / "run" / "adapter"))  # the standard diffusers call
    _, tuned_images = _final_latents(pipe)
    assert (tuned_images - base_images).abs().max() > 1e-3
    # and it is the trained adapter: the same as the last checkpoint's weights applied through peft
    from rocm_rlhf.training.lora import add_lora, load_lora_state_dict

    again = load_lcm_pipeline(tiny_lcm_dir)
    add_lora(again.unet, 4, 4, ["to_q", "to_k", "to_v", "to_out.0"])
    ckpt = sorted((tmp_path / "run" / "checkpoints").glob("step_*"))[-1]
    load_lora_state_dict(again.unet, load_file(ckpt / "adapter.safetensors"))
    _, ckpt_images = _final_latents(again)
    torch.testing.assert_close(tuned_images, ckpt_images, rtol=1e-5, atol=1e-6)


def test_large_beta_stays_near_base(tmp_path, tiny_lcm_dir):
    base_lat, _ = _final_latents(load_lcm_pipeline(tiny_lcm_dir))
    moved = {}
    for beta in (0.0, 1e4):
        _train(tmp_path, f"b{beta}", tiny_lcm_dir, steps=6, beta=beta)
        pipe = load_lcm_pipeline(tiny_lcm_dir)
        pipe.load_lora_weights(str(tmp_path / f"b{beta}" / "adapter"))
        lat, _ = _final_latents(pipe)
        log = pd.read_csv(tmp_path / f"b{beta}" / "log.csv")
        moved[beta] = ((lat - base_lat).abs().mean().item(), log["divergence_mean"].iloc[-1])
    assert moved[1e4][0] < 0.5 * moved[0.0][0]
    assert moved[1e4][1] < 0.5 * moved[0.0][1]


@pytest.mark.parametrize("divergence", ["js", "hellinger", "fisher"])
def test_other_divergences_train(tmp_path, tiny_lcm_dir, divergence):
    _train(tmp_path, divergence, tiny_lcm_dir, steps=3, beta=0.5, divergence=divergence)
    log = pd.read_csv(tmp_path / divergence / "log.csv")
    assert log["divergence_mean"].iloc[-1] > 0 and log["reward_mean"].notna().all()


def test_kill_and_resume_gives_the_same_adapter(tmp_path, tiny_lcm_dir):
    _train(tmp_path, "full", tiny_lcm_dir, steps=5, beta=0.1)
    out = _train(tmp_path, "killed", tiny_lcm_dir, steps=5, beta=0.1, max_steps=3)  # dies after step 3
    assert out == {"stopped_at": 3}
    assert not (tmp_path / "killed" / "adapter").exists()
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").glob("step_*")) == ["step_000002"]
    _train(tmp_path, "killed", tiny_lcm_dir, steps=5, beta=0.1)  # resumes from step 2, replays 3..5
    assert_same_adapter(tmp_path / "full", tmp_path / "killed")
    la, lb = pd.read_csv(tmp_path / "full" / "log.csv"), pd.read_csv(tmp_path / "killed" / "log.csv")
    pd.testing.assert_series_equal(la["reward_mean"], lb["reward_mean"])
    assert list(lb["reward_queries"]) == list(la["reward_queries"])


def test_nan_stops_with_clear_error_and_keeps_last_checkpoint(tmp_path, tiny_lcm_dir):
    with pytest.raises(TrainingDivergedError, match=r"loss is nan at update 4 \(the reward, NanReward, returned \d+ non-finite"):
        _train(tmp_path, "nan", tiny_lcm_dir, steps=6, reward="test_nan")
    ckpts = sorted(p.name for p in (tmp_path / "nan" / "checkpoints").glob("step_*"))
    assert ckpts == ["step_000002"]
    assert not (tmp_path / "nan" / "run.json").exists()


def test_paper_batch_of_one_logs_an_empty_reward_std(tmp_path, tiny_lcm_dir):
    """At train.batch_size 1 (the paper's ROCM setting) the std of one image is undefined: log.csv leaves it empty
    (the old code logged torch's NaN from ROCM and 0.0 from the baselines), and training runs on with finite loss."""
    _train(tmp_path, "b1", tiny_lcm_dir, steps=3, beta=0.1, batch_size=1)
    log = pd.read_csv(tmp_path / "b1" / "log.csv")
    assert log["reward_std"].isna().all()
    assert log[["reward_mean", "loss", "divergence_mean", "grad_norm"]].notna().all().all()
    from rocm_rlhf.training.loop import reward_stats

    assert reward_stats(torch.tensor([1.0, 3.0]))["reward_std"] == pytest.approx(2 ** 0.5)


def test_fp16_is_refused_pointing_to_bf16():
    from rocm_rlhf.infra.config import ConfigError
    from rocm_rlhf.training.loop import TrainSettings

    with pytest.raises(ConfigError, match="train.mixed_precision.*bf16"):
        _config(mixed_precision="fp16")
    with pytest.raises(ValueError, match="fp16 is not supported.*bf16"):
        TrainSettings(steps=1, batch_size=1, lr=1e-3, seed=0, mixed_precision="fp16")
    assert _config(mixed_precision="bf16")["train"]["mixed_precision"] == "bf16"
