"""Custom rewards for rocm-rlhf, used from the config without editing the package (docs/extending.md).

A scorer class (configurable through ``rewards."<module>:<Class>"``)::

    train:
      reward: "custom_reward:Colourfulness"
    rewards:
      "custom_reward:Colourfulness": {eps: 1.0e-4}
    evaluation:
      metrics: [gold, proxy_pick, "custom_reward:Colourfulness"]   # the figures report the training reward

or a plain function, ``reward: "custom_reward:brightness"``, or either in a weighted sum with the built-ins::

    train:
      reward: {proxy_pick: 1.0, "custom_reward:Colourfulness": 0.2}
    figures:
      reward_metric: proxy_pick

The module must be importable where the jobs run: ``PYTHONPATH=examples snakemake --cores 2 ...``.
"""

from __future__ import annotations

import torch

from rocm_rlhf.rewards import Scorer


class Colourfulness(Scorer):
    """Hasler & Suesstrunk's colourfulness (2003), differentiable: sigma_rgyb + 0.3 mu_rgyb of the opponent channels
    rg = R - G and yb = (R + G) / 2 - B, per image, on [0, 1] pixels (so about 0 for grey, up to about 1)."""

    differentiable = True  # ROCM backpropagates through it
    definition = "Hasler-Suesstrunk colourfulness of [0, 1] RGB: sqrt(var rg + var yb) + 0.3 sqrt(mean rg^2 + mean yb^2)"

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = float(eps)  # keeps the square roots differentiable at a grey image

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        r, g, b = images.float().unbind(1)  # (B, H, W) each
        rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
        sigma = (rg.var(1, unbiased=False) + yb.var(1, unbiased=False) + self.eps).sqrt()
        mu = (rg.mean(1) ** 2 + yb.mean(1) ** 2 + self.eps).sqrt()
        return sigma + 0.3 * mu  # (B,): one score per image, higher is better


def brightness(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Mean Rec. 709 luma of [0, 1] RGB (differentiable)."""
    weights = torch.tensor([0.2126, 0.7152, 0.0722], device=images.device, dtype=images.dtype)
    return (images * weights[None, :, None, None]).sum(1).flatten(1).mean(1)


brightness.differentiable = True  # optional; a function without it counts as differentiable
