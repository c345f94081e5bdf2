"""Scorers that need no model: JPEG compressibility, DDPO's non-differentiable task (Black et al. 2023).

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
