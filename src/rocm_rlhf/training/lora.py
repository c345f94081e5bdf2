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


def save_lora(unet, out_dir: str | Path, pipeline_cls=None) -> Path:
    """Save the adapter as diffusers LoRA weights (``load_lora_weights``-compatible)."""
    from diffusers import LatentConsistencyModelPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    pipeline_cls = pipeline_cls or LatentConsistencyModelPipeline
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    pipeline_cls.save_lora_weights(save_directory=str(out_dir), unet_lora_layers=layers, safe_serialization=True)
    return out_dir / "pytorch_lora_weights.safetensors"
