"""Measured quality of the sandbox (``quality.json``): is the judge a judge, and does the base model leave room?

- the gold judge on freshly rendered images: attribute accuracy (must be ~100%) and realism (~1);
- the base LCM at 1, 2, 4 and 8 steps on every caption of the grammar: gold, fidelity, realism and per-attribute
  accuracy, against chance (a random real render for the prompt's attributes has fidelity ~ 1/|values| each);
- the VAE's reconstruction realism (an upper bound for any generator that decodes through it);
- the proxies' correlation with gold on fresh base samples (they must be informative but imperfect).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..models import lcm_generate, load_lcm_pipeline
from ..rewards import load_scorer
from ..samplers import decode_latents
from .build import encode_images
from .data import captioned_batch
from .judge import GoldJudge
from .captions import all_captions, parse_caption
from .render import ATTRIBUTE_NAMES, ATTRIBUTE_VALUES, World


def judge_accuracy(world: World, judge: GoldJudge, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    images, caps, attrs = captioned_batch(world, n, rng)
    pred = judge.predict_attributes(images)
    acc = {a: float(np.mean([ATTRIBUTE_VALUES[a][int(p)] == getattr(t, a) for p, t in zip(pred[a], attrs)]))
           for a in ATTRIBUTE_NAMES}
    scores = judge(images, caps)
    return {"n": n, "attribute_accuracy": acc, "fidelity": float(scores["fidelity"].mean()),
            "realism": float(scores["realism"].mean()), "gold": float(scores["gold"].mean())}


def model_quality(images: torch.Tensor, prompts: list[str], judge: GoldJudge) -> dict:
    scores = judge(images, prompts)
    pred = judge.predict_attributes(images)
    acc = {}
    for a in ATTRIBUTE_NAMES:
        hits = [ATTRIBUTE_VALUES[a][int(p)] == parse_caption(c)[a]
                for p, c in zip(pred[a], prompts) if a in parse_caption(c)]
        acc[a] = float(np.mean(hits)) if hits else float("nan")
    return {"gold": float(scores["gold"].mean()), "fidelity": float(scores["fidelity"].mean()),
            "realism": float(scores["realism"].mean()), "attribute_accuracy": acc}


def chance_fidelity(prompts: list[str]) -> float:
    """Expected fidelity of an image with uniformly random attributes."""
    vals = []
    for c in prompts:
        m = parse_caption(c)
        vals.append(np.mean([1 / len(ATTRIBUTE_VALUES[a]) for a in m]))
    return float(np.mean(vals))


@torch.no_grad()
def assess(lcm_dir: str | Path, proxy_dirs: dict[str, str | Path], world: World, *, guidance_scale: float,
           steps: tuple[int, ...] = (1, 2, 4, 8), n_judge: int = 1000, n_prompts: int | None = None,
           seed: int = 0, tau: float | None = None) -> dict:
    judge = GoldJudge(world, tau=tau)
    out: dict = {"judge_on_fresh_renders": judge_accuracy(world, judge, n_judge, seed)}
    pipe = load_lcm_pipeline(lcm_dir)
    images, real_caps, _ = captioned_batch(world, 256, np.random.default_rng(seed + 1))
    lat = encode_images(pipe.vae, images)
    rec = decode_latents(pipe.vae, lat)
    out["vae_reconstruction"] = {"mse": float(((rec - images) ** 2).mean()),
                                 "realism": float(judge(rec, real_caps)["realism"].mean())}
    captions = [c.text for c in all_captions()]
    if n_prompts is not None and n_prompts < len(captions):  # an evenly spaced subset of the grammar
        captions = [captions[i] for i in np.linspace(0, len(captions) - 1, n_prompts).round().astype(int)]
    prompts = captions
    out["chance_fidelity"] = chance_fidelity(prompts)
    out["base_lcm"] = {}
    g = torch.Generator().manual_seed(seed)
    per_k = {}
    for k in steps:
        imgs = lcm_generate(pipe, prompts, num_steps=k, guidance_scale=guidance_scale, generator=g)
        per_k[k] = imgs
        out["base_lcm"][f"{k}_steps"] = model_quality(imgs, prompts, judge)
    out["base_lcm"]["n_images_per_setting"] = len(prompts)
    out["guidance_scale"] = guidance_scale
    out["proxies"] = {}
    k_eval = 4 if 4 in per_k else steps[-1]
    gold = judge(per_k[k_eval], prompts)
    for name, path in proxy_dirs.items():
        scorer = load_scorer(name, model_id=str(path))
        s = torch.cat([scorer(per_k[k_eval][i : i + 256], prompts[i : i + 256]) for i in range(0, len(prompts), 256)])
        real = scorer(images, real_caps)
        out["proxies"][name] = {
            "pearson_with_gold": float(np.corrcoef(s.numpy(), gold["gold"].numpy())[0, 1]),
            "pearson_with_realism": float(np.corrcoef(s.numpy(), gold["realism"].numpy())[0, 1]),
            "mean_on_base_samples": float(s.mean()),
            "mean_on_real_renders": float(real.mean()),
            "evaluated_on": f"base LCM, {k_eval} steps",
        }
    return out
