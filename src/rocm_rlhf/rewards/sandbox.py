"""The sandbox's scorers: two learned, differentiable proxy reward models and the gold judge.

``proxy_pick`` (stands in for PickScore: sigmoid(a cos(CNN(image), BoW(prompt tokens)) + b)) and ``proxy_aesthetic``
(stands in for the LAION aesthetic predictor: sigmoid(CNN(image))) are small networks trained on the base model's own
samples labelled by the gold judge (:mod:`rocm_rlhf.sandbox.proxies`), loaded with ``from_pretrained``; ``gold``,
``gold_fidelity`` and ``gold_realism`` are the gold judge (:mod:`rocm_rlhf.sandbox.judge`), evaluation only. Each
class reads its arguments from the config (``config_kwargs``: a proxy's folder in the sandbox build, the judge's world
settings). How the proxies are trained and why: docs/method.md, section 'Rewards and metrics'.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from . import Scorer, register


def _conv_tower(width: int) -> nn.Sequential:
    """3x32x32 -> flat features of size 2 * width * 4 * 4."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.SiLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU(),  # 16
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.SiLU(),
        nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),  # 8
        nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),  # 4
        nn.Flatten(),
    )


class ProxyPickModel(ModelMixin, ConfigMixin):
    """Dual-encoder preference model on 32x32 images in [0, 1] and token ids."""

    @register_to_config
    def __init__(self, vocab_size: int = 600, width: int = 16, embed_dim: int = 64, image_size: int = 32):
        super().__init__()
        self.image_tower = _conv_tower(width)
        feat = 2 * width * (image_size // 8) ** 2
        self.image_proj = nn.Linear(feat, embed_dim)
        self.token_embedding = nn.Embedding(vocab_size, embed_dim)
        self.text_proj = nn.Sequential(nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.scale = nn.Parameter(torch.tensor(5.0))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        img = self.image_proj(self.image_tower(images * 2 - 1))
        tok = self.token_embedding(input_ids) * attention_mask.unsqueeze(-1)
        txt = self.text_proj(tok.sum(1) / attention_mask.sum(1, keepdim=True).clamp(min=1))
        cos = F.cosine_similarity(img, txt, dim=-1)
        return self.scale * cos + self.bias  # logit; the score is its sigmoid


class ProxyAestheticModel(ModelMixin, ConfigMixin):
    """Image-only quality model on 32x32 images in [0, 1]."""

    @register_to_config
    def __init__(self, width: int = 16, image_size: int = 32):
        super().__init__()
        self.image_tower = _conv_tower(width)
        feat = 2 * width * (image_size // 8) ** 2
        self.head = nn.Sequential(nn.Linear(feat, 64), nn.SiLU(), nn.Linear(64, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.image_tower(images * 2 - 1)).squeeze(-1)  # logit


class _Proxy(Scorer):
    """A learned proxy of the sandbox: its folder is ``<sandbox rewards folder>/<name>`` unless
    ``rewards.<name>.model_id`` names one."""

    @classmethod
    def config_kwargs(cls, name: str, config: dict, sandbox_rewards_dir: str | None = None) -> dict:
        kw = super().config_kwargs(name, config, sandbox_rewards_dir)
        if "model_id" not in kw and sandbox_rewards_dir:
            kw["model_id"] = str(Path(sandbox_rewards_dir) / name)
        return kw


@register("proxy_pick")
class ProxyPick(_Proxy):
    definition = "sandbox proxy_pick: sigmoid(a*cos(CNN(image), BoW(prompt tokens)) + b), regressed on gold; in (0,1)"

    def __init__(self, model_id: str | Path, dtype: torch.dtype | None = None):
        super().__init__()
        from transformers import CLIPTokenizer

        model_id = Path(model_id)
        if not (model_id / "config.json").exists():
            raise FileNotFoundError(f"proxy reward folder '{model_id}' has no config.json: build the sandbox first")
        self.model = ProxyPickModel.from_pretrained(model_id).eval().requires_grad_(False)
        self.tokenizer = CLIPTokenizer.from_pretrained(model_id / "tokenizer")
        if dtype is not None:
            self.model.to(dtype)

    def tokenize(self, prompts: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt")
        return tok.input_ids.to(device), tok.attention_mask.to(device)

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        ids, mask = self.tokenize(prompts, images.device)
        return torch.sigmoid(self.model(images.to(self.model.dtype), ids, mask))


@register("proxy_aesthetic")
class ProxyAesthetic(_Proxy):
    definition = "sandbox proxy_aesthetic: sigmoid(CNN(image)), regressed on the gold judge's realism; in (0,1)"

    def __init__(self, model_id: str | Path, dtype: torch.dtype | None = None):
        super().__init__()
        model_id = Path(model_id)
        if not (model_id / "config.json").exists():
            raise FileNotFoundError(f"proxy reward folder '{model_id}' has no config.json: build the sandbox first")
        self.model = ProxyAestheticModel.from_pretrained(model_id).eval().requires_grad_(False)
        if dtype is not None:
            self.model.to(dtype)

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return torch.sigmoid(self.model(images.to(self.model.dtype)))


class _Gold(Scorer):
    differentiable = False
    component = "gold"

    @classmethod
    def config_kwargs(cls, name: str, config: dict, sandbox_rewards_dir: str | None = None) -> dict:
        """``rewards.<name>`` over the sandbox world's ``sandbox.image_size``, ``sandbox.jitter`` and
        ``sandbox.judge_tau``."""
        kw = super().config_kwargs(name, config, sandbox_rewards_dir)
        sb = config["sandbox"]
        kw.setdefault("image_size", sb["image_size"])
        kw.setdefault("jitter", sb["jitter"])
        kw.setdefault("tau", sb["judge_tau"])
        return kw

    def __init__(self, image_size: int = 32, jitter: int = 1, tau: float | None = None):
        super().__init__()
        from rocm_rlhf.sandbox.judge import GoldJudge
        from rocm_rlhf.sandbox.render import World

        self.judge = GoldJudge(World(image_size=image_size, jitter=jitter), tau=tau)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.judge(images.float(), list(prompts))[self.component].to(images.dtype)


@register("gold")
class Gold(_Gold):
    definition = "sandbox gold judge: fidelity x realism (rocm_rlhf.sandbox.judge); evaluation only"
    component = "gold"


@register("gold_fidelity")
class GoldFidelity(_Gold):
    definition = "sandbox gold judge: fraction of the prompt's attributes shown by the nearest real render"
    component = "fidelity"


@register("gold_realism")
class GoldRealism(_Gold):
    definition = "sandbox gold judge: exp(-mse to the nearest real render / tau)"
    component = "realism"
