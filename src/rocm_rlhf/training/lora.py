"""LoRA on the UNet through peft (diffusers' adapter integration), saved in the format pipelines load.

``save_lora`` writes ``pytorch_lora_weights.safetensors`` with diffusers' key convention, so a trained adapter loads
with the standard call::

    pipe = LatentConsistencyModelPipeline.from_pretrained(base)
    pipe.load_lora_weights("results/runs/<run>/adapter")
"""

from __future__ import annotations

from pathlib import Path

import torch


def add_lora(unet, rank: int, alpha: float, target_modules: list[str], seed: int | None = None,
             adapter_name: str = "default") -> list[torch.nn.Parameter]:
    """Add a LoRA adapter to ``unet`` (B initialised to zero, so the model starts exactly at the base) and return
    its trainable parameters; everything else is frozen."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    names = [n for n, _ in unet.named_modules()]
    missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:  # peft would adapt the others and say nothing about these
        raise ValueError(f"train.lora.target_modules {missing} match no layer of the UNet; e.g. to_q, to_k, to_v, "
                         f"to_out.0 (attention projections)")
    if seed is not None:
        torch.manual_seed(seed)  # LoRA A's initialisation
    cfg = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=True, target_modules=list(target_modules))
    unet.add_adapter(cfg, adapter_name=adapter_name)
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    if not params:
        raise ValueError(f"no LoRA parameters were created: none of target_modules {target_modules} is in the UNet")
    for p in params:
        p.requires_grad_(True)
    return params


def lora_state_dict(unet) -> dict[str, torch.Tensor]:
    """The adapter's weights in peft's naming (for checkpoints)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(unet).items()}


def load_lora_state_dict(unet, state: dict[str, torch.Tensor]) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(unet, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"checkpoint has LoRA keys the model lacks: {unexpected[:5]} ...")


def lora_scaling(unet, adapter_name: str = "default") -> float:
    """The factor peft multiplies ``B @ A`` by: ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA). Per-module rank or
    alpha patterns are refused: every adapter this project creates has one rank and one alpha."""
    cfg = unet.peft_config[adapter_name]
    if getattr(cfg, "rank_pattern", None) or getattr(cfg, "alpha_pattern", None):
        raise ValueError("LoRA adapters with per-module rank_pattern / alpha_pattern are not supported by save_lora")
    return float(cfg.lora_alpha) / (cfg.r ** 0.5 if getattr(cfg, "use_rslora", False) else cfg.r)


def save_lora(unet, out_dir: str | Path, pipeline_cls=None) -> Path:
    """Save the adapter as diffusers LoRA weights (``load_lora_weights``-compatible), at full strength.

    A LoRA weight update is ``(alpha / r) * B @ A``; the diffusers file holds ``A`` and ``B`` only, and loaders that
    find no alpha in it (every diffusers release before adapter metadata, and the other tools that read this format)
    rebuild the adapter with ``alpha = r``, i.e. scale 1. So the scale is folded into ``B`` before saving
    (``B' = (alpha / r) B``): the file then means the same update for every loader, whatever it assumes about alpha.
    Tested with alpha != rank (the shipped configs' r 16 / alpha 32): a fresh pipeline plus this file reproduces the
    trained model's UNet outputs.
    """
    from diffusers import LatentConsistencyModelPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    pipeline_cls = pipeline_cls or LatentConsistencyModelPipeline
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scale = lora_scaling(unet)
    state = {k: (v * scale if "lora_B" in k else v).detach().clone()
             for k, v in get_peft_model_state_dict(unet).items()}
    if not any("lora_B" in k for k in state):
        raise ValueError("no LoRA B weights found in the adapter state dict: cannot fold the LoRA scale")
    layers = convert_state_dict_to_diffusers(state)
    pipeline_cls.save_lora_weights(save_directory=str(out_dir), unet_lora_layers=layers, safe_serialization=True)
    return out_dir / "pytorch_lora_weights.safetensors"
