"""Training the sandbox's proxy reward models (see :mod:`rocm_rlhf.rewards.sandbox` for what they are).

Both are trained like real preference models: on the base LCM's own samples labelled by the gold judge, plus real
renders (and, for ``proxy_pick``, real renders with mismatched captions; for ``proxy_aesthetic``, corrupted renders),
with a soft-label binary cross-entropy on a sigmoid output. The gold judge labels the data but is never a reward.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..models import lcm_generate, load_lcm_pipeline
from ..rewards.sandbox import ProxyAestheticModel, ProxyPickModel
from .data import captioned_batch
from .judge import GoldJudge
from .captions import all_captions
from .render import World

KINDS = ("proxy_pick", "proxy_aesthetic")


def corrupt(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random degradations of real renders: pixel noise, blur, colour/saturation shifts (each image one kind)."""
    out = images.clone()
    kind = rng.integers(0, 3, size=len(images))
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    for i, k in enumerate(kind):
        x = out[i]
        if k == 0:
            x = x + float(rng.uniform(0.02, 0.25)) * torch.randn(x.shape, generator=g)
        elif k == 1:
            r = int(rng.integers(1, 3))
            x = F.avg_pool2d(x[None], 2 * r + 1, stride=1, padding=r, count_include_pad=False)[0]
        else:
            gain = torch.tensor(rng.uniform(0.5, 1.8, size=3), dtype=x.dtype).view(3, 1, 1)
            x = (x - 0.5) * gain + 0.5 + float(rng.uniform(-0.2, 0.2))
        out[i] = x.clamp(0, 1)
    return out


@torch.no_grad()
def base_samples(lcm_dir: str | Path, world: World, n: int, steps: tuple[int, ...], guidance_scale: float,
                 seed: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` images of the base LCM for random captions, the step count varying over ``steps``."""
    pipe = load_lcm_pipeline(lcm_dir)
    rng = np.random.default_rng(seed)
    caps = [c.text for c in all_captions()]
    prompts = [caps[i] for i in rng.integers(0, len(caps), size=n)]
    g = torch.Generator().manual_seed(seed)
    chunks = np.array_split(np.arange(n), len(steps))
    images = [lcm_generate(pipe, [prompts[i] for i in idx], num_steps=k, guidance_scale=guidance_scale, generator=g)
              for k, idx in zip(steps, chunks)]
    return torch.cat(images), prompts


def train_proxy(kind: str, lcm_dir: str | Path, world: World, out_dir: str | Path, *, steps: int, n_base: int,
                batch_size: int = 64, lr: float = 2e-3, guidance_scale: float = 3.0,
                sample_steps: tuple[int, ...] = (1, 2, 4, 8), seed: int = 0, tau: float | None = None) -> dict:
    """Train one proxy (``kind`` in KINDS) and save it; returns measured figures."""
    if kind not in KINDS:
        raise ValueError(f"unknown proxy kind '{kind}'; known: {', '.join(KINDS)}")
    t0 = time.time()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    judge = GoldJudge(world, tau=tau)
    base_imgs, base_prompts = base_samples(lcm_dir, world, n_base, sample_steps, guidance_scale, seed + 1)
    base_gold = judge(base_imgs, base_prompts)
    n_val = max(1, n_base // 8)
    target_key = "gold" if kind == "proxy_pick" else "realism"
    base_y = base_gold[target_key]
    tr_imgs, tr_prompts, tr_y = base_imgs[n_val:], base_prompts[n_val:], base_y[n_val:]
    va_imgs, va_prompts, va_y = base_imgs[:n_val], base_prompts[:n_val], base_y[:n_val]
    caps = [c.text for c in all_captions()]

    if kind == "proxy_pick":
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(Path(lcm_dir) / "tokenizer")
        model = ProxyPickModel(vocab_size=len(tokenizer), image_size=world.image_size)

        def logits(imgs, prompts):
            tok = tokenizer(list(prompts), padding="max_length", truncation=True,
                            max_length=tokenizer.model_max_length, return_tensors="pt")
            return model(imgs, tok.input_ids, tok.attention_mask)
    else:
        tokenizer = None
        model = ProxyAestheticModel(image_size=world.image_size)

        def logits(imgs, prompts):
            return model(imgs)

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    bar = tqdm(total=steps, desc=kind, mininterval=5.0, ascii=True)
    for step in range(steps):
        for gr in opt.param_groups:
            gr["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        # half base samples, half real renders (pick: matched or mismatched captions; aesthetic: clean or corrupted)
        nb = batch_size // 2
        bi = rng.integers(0, len(tr_imgs), size=nb)
        imgs = [tr_imgs[bi]]
        prompts = [tr_prompts[i] for i in bi]
        ys = [tr_y[bi]]
        real, real_caps, _ = captioned_batch(world, batch_size - nb, rng)
        if kind == "proxy_pick":
            swap = rng.random(len(real_caps)) < 0.5
            real_caps = [caps[int(rng.integers(len(caps)))] if s else c for c, s in zip(real_caps, swap)]
        else:
            bad = torch.from_numpy(rng.random(len(real)) < 0.5)
            real = torch.where(bad.view(-1, 1, 1, 1), corrupt(real, rng), real)
        imgs.append(real)
        prompts += real_caps
        ys.append(judge(real, real_caps)[target_key])
        x, y = torch.cat(imgs), torch.cat(ys)
        loss = F.binary_cross_entropy_with_logits(logits(x, prompts), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
    bar.close()
    model.eval()
    with torch.no_grad():
        pred = torch.sigmoid(logits(va_imgs, va_prompts))
    corr = float(np.corrcoef(pred.numpy(), va_y.numpy())[0, 1]) if va_y.std() > 0 else float("nan")
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir / "tokenizer")
    return {"seconds": time.time() - t0, "final_loss": float(loss), "val_pearson_with_gold": corr,
            "val_n": n_val, "target": target_key, "base_mean_target": float(base_y.mean())}
