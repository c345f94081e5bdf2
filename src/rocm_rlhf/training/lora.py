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


def adapter_file(path: str | Path) -> Path:
    """The LoRA weights file of ``train.init_adapter``: a ``.safetensors`` file, or a folder holding
    ``pytorch_lora_weights.safetensors`` (a run's ``adapter/``) or exactly one ``.safetensors`` file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"train.init_adapter: {p} does not exist; give a run's adapter folder "
                         f"(results/runs/<run>/adapter) or a diffusers LoRA .safetensors file")
    if p.is_file():
        return p
    if (p / "pytorch_lora_weights.safetensors").is_file():
        return p / "pytorch_lora_weights.safetensors"
    found = sorted(p.glob("*.safetensors"))
    if len(found) != 1:
        raise ValueError(f"train.init_adapter: folder {p} holds {len(found)} .safetensors files and no "
                         f"pytorch_lora_weights.safetensors; name the file itself")
    return found[0]


def load_init_adapter(unet, path: str | Path, pipeline_cls=None, adapter_name: str = "default") -> Path:
    """Warm start: set the LoRA adapter that :func:`add_lora` made on ``unet`` to a saved diffusers LoRA (a run's
    ``adapter/``, written by :func:`save_lora`, or any diffusers- or kohya-format UNet LoRA that diffusers'
    ``lora_state_dict`` reads), so that the model computes what the saved adapter computes. Returns the file read.

    The file's update of a layer is ``s_f * B_f @ A_f`` with ``s_f = alpha_f / r_f`` where the file stores alphas
    (kohya) and 1 otherwise (diffusers' convention; :func:`save_lora` folds its scale into ``B``); this adapter
    multiplies by its own ``alpha / r`` (:func:`lora_scaling`), so ``B = B_f * s_f / (alpha / r)``. The rank and the
    adapted layers must match ``train.lora`` (:class:`ValueError` otherwise, naming the difference); text-encoder
    LoRA weights are refused (only the UNet is trained)."""
    from diffusers import LatentConsistencyModelPipeline
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft.utils import get_peft_model_state_dict

    file = adapter_file(path)
    pipeline_cls = pipeline_cls or LatentConsistencyModelPipeline
    try:
        state, alphas = pipeline_cls.lora_state_dict(str(file))
    except Exception as err:  # noqa: BLE001 -- any failure to read means: not a LoRA file we can use
        raise ValueError(f"train.init_adapter: {file} is not a LoRA file diffusers can read "
                         f"({type(err).__name__}: {err})") from err
    other = sorted({k.split(".")[0] for k in state if not k.startswith("unet.")})
    if other:
        raise ValueError(f"train.init_adapter: {file} holds LoRA weights of {other}; only UNet LoRA adapters can "
                         f"warm-start a run")
    peft_state = convert_unet_state_dict_to_peft({k[len("unet."):]: v for k, v in state.items()})
    alphas = {k[len("unet."):-len(".alpha")]: float(v) for k, v in (alphas or {}).items()
              if k.startswith("unet.") and k.endswith(".alpha")}
    ours = get_peft_model_state_dict(unet, adapter_name=adapter_name)
    missing, unexpected = sorted(set(ours) - set(peft_state)), sorted(set(peft_state) - set(ours))
    if missing or unexpected:
        def layers(keys):
            return sorted({k.rsplit(".lora_", 1)[0] for k in keys})

        raise ValueError(f"train.init_adapter: {file} adapts other layers than train.lora.target_modules here: "
                         f"{len(layers(missing))} layers of this run are not in it (e.g. {layers(missing)[:2]}), "
                         f"{len(layers(unexpected))} of its layers are not adapted here (e.g. {layers(unexpected)[:2]}); "
                         f"set train.lora.target_modules to the adapter's")
    scale = lora_scaling(unet, adapter_name)
    for key, value in peft_state.items():
        if value.shape != ours[key].shape:
            rank_f = peft_state[key.replace("lora_B", "lora_A")].shape[0]
            raise ValueError(f"train.init_adapter: {file} has LoRA rank {rank_f} at {key.rsplit('.lora_', 1)[0]}, "
                             f"this run rank {ours[key.replace('lora_B', 'lora_A')].shape[0]}; set train.lora.rank "
                             f"to the adapter's ({rank_f})")
        if "lora_B" in key:
            layer = key.rsplit(".lora_B", 1)[0]
            rank_f = peft_state[layer + ".lora_A.weight"].shape[0]
            file_scale = alphas[layer] / rank_f if layer in alphas else 1.0
            peft_state[key] = value.float() * (file_scale / scale)
    load_lora_state_dict(unet, {k: v.to(ours[k].dtype) for k, v in peft_state.items()})
    return file
