"""Scorers that need no model: JPEG compressibility, DDPO's non-differentiable task (Black et al. 2023), and total
variation, a differentiable stand-in for it.

``jpeg_compressibility``: minus the size in kilobytes of each image saved as a JPEG at quality 95, the images
quantised to 8 bits as they would be saved (kvablack/ddpo-pytorch ``rewards.jpeg_compressibility``: PIL, quality 95,
size in kB = bytes / 1000). No gradient reaches the pixels (``differentiable = False``): a reward for the
score-function methods (RLCM, DDPO, D3PO, DPOK, rocm_rlhf.training.rocm_sf), not for ROCM's pathwise gradient.
"""

from __future__ import annotations

import io

import torch

from . import Scorer, register


@register("jpeg_compressibility")
class JPEGCompressibility(Scorer):
    differentiable = False
    definition = "-(JPEG size in kB at PIL quality 95 of the 8-bit image), as DDPO's jpeg_compressibility; no gradient"

    def __init__(self, quality: int = 95):
        super().__init__()
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"jpeg_compressibility: quality must be in 1..100, got {quality}")
        self.quality = int(quality)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        from PIL import Image

        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"jpeg_compressibility scores images [B, 3, H, W], got shape {tuple(images.shape)}")
        arr = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        sizes = []
        for a in arr:
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="JPEG", quality=self.quality)
            sizes.append(buf.tell() / 1000.0)
        return -torch.tensor(sizes, dtype=torch.float32, device=images.device)


@register("total_variation")
class TotalVariation(Scorer):
    """A differentiable stand-in for :class:`JPEGCompressibility`: what JPEG spends its bits on is the image's
    high-frequency content, so minus the mean absolute difference between neighbouring pixels (anisotropic total
    variation, in 8-bit units, over channels, rows and columns) rises as the JPEG file shrinks. Its gradient reaches
    the pixels, so ROCM can climb it (``train.surrogate``) where the JPEG size itself has none."""

    differentiable = True
    definition = ("-(mean |difference| of horizontally and vertically neighbouring pixels, 0-255 scale): a "
                  "differentiable stand-in for jpeg_compressibility")

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or min(images.shape[2:]) < 2:
            raise ValueError(f"total_variation scores images [B, 3, H, W] with H, W >= 2, got shape "
                             f"{tuple(images.shape)}")
        x = images.float().clamp(0, 1) * 255
        dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1)
        dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
        return -(dh + dw) / 2
