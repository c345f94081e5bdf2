"""Extension points: a plug-in reward 'module:Class' / 'module:function' from the config (examples/custom_reward.py),
a weighted sum of rewards as the training reward, and the warm start of a run from a saved LoRA adapter
(train.init_adapter), at the shipped configs' LoRA rank 16 / alpha 32 where a wrong scale would show."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import REPO
from test_probe import SPEC
from test_training import PROMPTS  # noqa: F401 -- registers the test_redness reward
from rocm_rlhf.infra.config import ConfigError, validate_config
from rocm_rlhf.rewards import WeightedSum, load_reward, load_scorer
from rocm_rlhf.training.run import train_run

PLUGIN = "custom_reward:Colourfulness"


@pytest.fixture(autouse=True)
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples"))


def _config(reward, **train):
    t = {"steps": 3, "batch_size": 1, "lr": 0.02, "checkpoint_every": 3, "lora": {"rank": 16, "alpha": 32},
         "reward": reward, "trackers": [], **train}
    metrics = [m for m in ([reward] if isinstance(reward, str) else []) if ":" in m]
    return validate_config({"device": "cpu", "train": t, "model": {"num_steps": 3, "guidance_scale": 3.0},
                            "evaluation": {"metrics": ["gold", "proxy_pick", *metrics]},
                            "figures": {"reward_metric": "" if isinstance(reward, str) else "proxy_pick"}})


def _train(tmp_path, name, model_dir, reward="test_redness", reward_kwargs=None, probe=None, max_steps=None,
           **train):
    cfg = _config(reward, **train)
    return train_run(cfg, method="rocm", run_id=name, seed=0, run_dir=tmp_path / name, model_id=str(model_dir),
                     reward_name=cfg["train"]["reward"], reward_kwargs=reward_kwargs or {}, prompts=PROMPTS,
                     max_steps=max_steps, divergence="kl", beta=0.1, probe=probe)


# ------------------------------------------------------------------------------------------- plug-in rewards
def test_a_plugin_reward_class_trains_a_run_and_is_validated_with_the_config(tmp_path, tiny_lcm_dir):
    info = _train(tmp_path, "plugin", tiny_lcm_dir, reward=PLUGIN, reward_kwargs={"eps": 1e-4})
    assert info["reward"] == PLUGIN and info["reward_definition"].startswith("Hasler-Suesstrunk colourfulness")
    log = pd.read_csv(tmp_path / "plugin" / "log.csv")
    assert log["reward_mean"].between(0, 2).all() and log["reward_mean"].nunique() == 3
    # the logged reward is the plug-in's score of the step's images: what load_scorer gives by the same name
    scorer = load_scorer(PLUGIN, eps=1e-4)
    grey, red = torch.full((1, 3, 8, 8), 0.5), torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1
    assert scorer(grey, [""]).item() < 0.02 < 0.3 < scorer(red, [""]).item()  # 0.3 * |(1, 0.5)| for pure red


def test_a_plugin_function_is_a_scorer():
    scorer = load_scorer("custom_reward:brightness")
    assert scorer.differentiable and scorer.definition.startswith("Mean Rec. 709 luma")
    assert scorer(torch.ones(2, 3, 4, 6), ["a", "b"]).tolist() == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("name, message", [
    ("no_such_module:Thing", r"cannot import module 'no_such_module' \(ModuleNotFoundError.*PYTHONPATH"),
    ("custom_reward:Missing", r"module 'custom_reward' \(.*custom_reward.py\) has no attribute 'Missing'"),
    ("custom_reward:torch", r"torch is a module, not a scorer class"),
    ("custom_reward:Scorer.config_kwargs", r"must take \(images, prompts\)|not a scorer class"),
    ("custom_reward:", r"a plug-in is named 'module:Class' or 'module:function'"),
])
def test_a_bad_plugin_fails_at_validation_naming_what_is_wrong(name, message):
    with pytest.raises(ConfigError, match=rf"config key 'train.reward': scorer '{name}': {message}"):
        _config(name)


def test_a_function_plugin_takes_no_options():
    with pytest.raises(ConfigError, match=r"rewards.custom_reward:brightness': a function scorer takes no options"):
        validate_config({"train": {"reward": "custom_reward:brightness"},
                         "rewards": {"custom_reward:brightness": {"x": 1}},
                         "evaluation": {"metrics": ["gold", "proxy_pick", "custom_reward:brightness"]}})


# ------------------------------------------------------------------------------------------ weighted sums
def test_the_weighted_sum_gradient_is_the_weighted_sum_of_the_gradients():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 12, 20)  # non-square
    weights = {"test_redness": 1.0, PLUGIN: -0.5}
    combined = load_reward(weights, {PLUGIN: {"eps": 1e-4}})
    assert isinstance(combined, WeightedSum) and combined.name == f"1*test_redness + -0.5*{PLUGIN}"

    def grad(scorer):
        x = images.clone().requires_grad_(True)
        scorer(x, ["a", "b"]).sum().backward()
        return x.grad

    parts = {"test_redness": load_scorer("test_redness"), PLUGIN: load_scorer(PLUGIN, eps=1e-4)}
    expected = sum(w * grad(parts[n]) for n, w in weights.items())
    torch.testing.assert_close(grad(combined), expected)
    assert not torch.allclose(grad(combined), grad(parts["test_redness"]))  # both terms count
    # the list form means the same
    listed = load_reward([{"name": n, "weight": w} for n, w in weights.items()], {PLUGIN: {"eps": 1e-4}})
    torch.testing.assert_close(listed(images, ["a", "b"]), combined(images, ["a", "b"]))


def test_a_run_trains_on_a_weighted_sum(tmp_path, tiny_lcm_dir):
    weights = {"test_redness": 1.0, PLUGIN: 0.5}
    info = _train(tmp_path, "sum", tiny_lcm_dir, reward=weights, reward_kwargs={PLUGIN: {"eps": 1e-4}})
    assert info["reward"] == f"1*test_redness + 0.5*{PLUGIN}" and info["reward_terms"] == weights
    assert "0.5 * [custom_reward:Colourfulness: Hasler" in info["reward_definition"]


def test_weighted_sum_settings_are_validated():
    with pytest.raises(ConfigError, match=r"train.reward\[proxy_pick\]': weight 0 adds nothing"):
        validate_config({"train": {"reward": {"proxy_pick": 0, "proxy_aesthetic": 1}},
                         "figures": {"reward_metric": "proxy_pick"}})
    with pytest.raises(ConfigError, match=r"figures.reward_metric': train.reward is a weighted sum"):
        validate_config({"train": {"reward": {"proxy_pick": 1, "proxy_aesthetic": 1}}})
    with pytest.raises(ConfigError, match=r"train.reward': 5 is none of the forms it takes"):
        validate_config({"train": {"reward": 5}})
    cfg = validate_config({"train": {"reward": [{"name": "proxy_pick", "weight": 1},
                                                {"name": "proxy_aesthetic", "weight": 0.5}]},
                           "figures": {"reward_metric": "proxy_pick"}})
    from rocm_rlhf.infra.staging import model_assets

    assert model_assets(cfg, generators=(), metrics=[]) == []  # the sandbox's proxies: no hub asset


# -------------------------------------------------------------------------------------------- warm start
def _sample(pipe):
    from rocm_rlhf.samplers.common import decode_latents, encode_prompts
    from rocm_rlhf.samplers.consistency import consistency_sample, draw_noise

    emb = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS)
    lat = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    noise = draw_noise(lat.shape, 3, torch.Generator().manual_seed(6))
    with torch.no_grad():
        return decode_latents(pipe.vae, consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=3,
                                                           guidance_scale=3.0, latents=lat, noise=noise).final)


def test_a_warm_started_run_starts_where_the_source_adapter_is(tmp_path, tiny_lcm_dir):
    from rocm_rlhf.models import load_lcm_pipeline
    from rocm_rlhf.training.lora import add_lora, load_init_adapter

    _train(tmp_path, "source", tiny_lcm_dir, probe=SPEC)  # rank 16, alpha 32: its file holds (alpha / r) B
    adapter = tmp_path / "source" / "adapter"
    # the reference: diffusers' own loader on a fresh pipeline
    ref = load_lcm_pipeline(tiny_lcm_dir)
    base = _sample(ref)
    ref.load_lora_weights(str(adapter))
    expected = _sample(ref)
    assert (expected - base).abs().max() > 1e-3  # the adapter changes the images: a wrong scale would show
    for source in (adapter, adapter / "pytorch_lora_weights.safetensors"):  # a run's folder, or the file
        pipe = load_lcm_pipeline(tiny_lcm_dir)
        add_lora(pipe.unet, 16, 32, ["to_q", "to_k", "to_v", "to_out.0"], seed=1)
        load_init_adapter(pipe.unet, source)
        torch.testing.assert_close(_sample(pipe), expected, atol=1e-5, rtol=0)
    # through the run: the warm-started run's step-0 probe is the source run's last one (the same weights)
    info = _train(tmp_path, "warm", tiny_lcm_dir, probe=SPEC, init_adapter=str(adapter))
    assert info["init_adapter"] == str(adapter / "pytorch_lora_weights.safetensors")
    src, warm = (pd.read_csv(tmp_path / r / "curve.csv") for r in ("source", "warm"))
    assert warm["mean"].iloc[0] == pytest.approx(src["mean"].iloc[-1], abs=1e-6)
    assert warm["mean"].iloc[0] != pytest.approx(src["mean"].iloc[0], abs=1e-6)


def test_a_bad_init_adapter_fails_naming_the_problem(tmp_path, tiny_lcm_dir):
    _train(tmp_path, "source", tiny_lcm_dir, steps=1, checkpoint_every=1)
    adapter = str(tmp_path / "source" / "adapter")
    with pytest.raises(ValueError, match=r"train.init_adapter: .*nowhere does not exist"):
        _train(tmp_path, "a", tiny_lcm_dir, init_adapter=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"has LoRA rank 16 at .*this run rank 8; set train.lora.rank"):
        _train(tmp_path, "b", tiny_lcm_dir, init_adapter=adapter, lora={"rank": 8, "alpha": 16})
    with pytest.raises(ValueError, match=r"adapts other layers than train.lora.target_modules.*0 layers of this run "
                                         r"are not in it.*set train.lora.target_modules"):
        _train(tmp_path, "c", tiny_lcm_dir, init_adapter=adapter,
               lora={"rank": 16, "alpha": 32, "target_modules": ["to_q", "to_k"]})
    assert not any((tmp_path / r / "log.csv").exists() for r in "abc")  # before any step
    Path(tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"holds 0 .safetensors files"):
        _train(tmp_path, "d", tiny_lcm_dir, init_adapter=str(tmp_path / "empty"))
