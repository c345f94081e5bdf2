"""An open_clip CLIP checkpoint (HPSv2 is one) as a transformers ``CLIPModel``, without open_clip.

open_clip imports torchvision, which does not import beside this project's CPU torch, so the HPSv2 checkpoint (open_clip
ViT-H-14) is loaded by renaming its state-dict keys. API: :func:`openclip_to_clip_state_dict` (the renamed state dict)
and :func:`clip_config_from_openclip` (the ``CLIPConfig``, sizes read from the tensors, head counts as arguments).
The key correspondence, activation, eps and text pooling: docs/method.md, section 'Rewards and metrics' (Loading HPSv2
without open_clip).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

_BLOCK_RE = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_BLOCK_RENAMES = {
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_PLAIN_RENAMES = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
_DROPPED = {"attn_mask"}


def openclip_to_clip_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an open_clip CLIP (ViT image tower, standard text tower) state dict to transformers' ``CLIPModel``.

    Raises ``ValueError`` naming the keys it does not know (e.g. a custom-text, attention-pooling or ResNet model).
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if key in _DROPPED:
            continue
        if key in _PLAIN_RENAMES:
            out[_PLAIN_RENAMES[key]] = value
            continue
        if key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.t().contiguous()
            continue
        m = _BLOCK_RE.match(key)
        if m is None:
            unknown.append(key)
            continue
        tower = "vision_model" if m.group(1) else "text_model"
        prefix = f"{tower}.encoder.layers.{m.group(2)}."
        rest = m.group(3)
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = "weight" if rest.endswith("weight") else "bias"
            q, k, v = value.chunk(3, dim=0)
            out[prefix + f"self_attn.q_proj.{kind}"] = q.contiguous()
            out[prefix + f"self_attn.k_proj.{kind}"] = k.contiguous()
            out[prefix + f"self_attn.v_proj.{kind}"] = v.contiguous()
        elif rest in _BLOCK_RENAMES:
            out[prefix + _BLOCK_RENAMES[rest]] = value
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(sorted(unknown)[:8]) + (" ..." if len(unknown) > 8 else "")
        raise ValueError(
            f"not an open_clip ViT CLIP checkpoint of the expected layout: {len(unknown)} unknown keys ({shown})"
        )
    return out


def _n_layers(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in state_dict if (m := pat.match(k))}
    if not idx:
        raise ValueError(f"no transformer blocks under '{prefix}' in the open_clip checkpoint")
    return max(idx) + 1


def clip_config_from_openclip(
    state_dict: Mapping[str, torch.Tensor],
    *,
    vision_num_heads: int,
    text_num_heads: int,
    bos_token_id: int,
    eos_token_id: int,
    pad_token_id: int,
):
    """The ``CLIPConfig`` of an open_clip ViT state dict (sizes from tensor shapes; heads and token ids given)."""
    from transformers import CLIPConfig

    try:
        conv = state_dict["visual.conv1.weight"]
        vpos = state_dict["visual.positional_embedding"]
        vproj = state_dict["visual.proj"]
        tok = state_dict["token_embedding.weight"]
        tpos = state_dict["positional_embedding"]
        tproj = state_dict["text_projection"]
        v_fc = state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"]
        t_fc = state_dict["transformer.resblocks.0.mlp.c_fc.weight"]
    except KeyError as err:
        raise ValueError(f"not an open_clip ViT CLIP checkpoint: key {err} missing") from None
    v_width, patch = conv.shape[0], conv.shape[-1]
    grid = round((vpos.shape[0] - 1) ** 0.5)
    if grid * grid + 1 != vpos.shape[0]:
        raise ValueError(f"visual.positional_embedding has {vpos.shape[0]} rows, not a square grid plus one")
    t_width = tok.shape[1]
    if vproj.shape[1] != tproj.shape[1]:
        raise ValueError(f"image and text projections differ in width: {vproj.shape[1]} vs {tproj.shape[1]}")
    for name, width, heads in (("vision", v_width, vision_num_heads), ("text", t_width, text_num_heads)):
        if width % heads:
            raise ValueError(f"{name} width {width} is not divisible by {name}_num_heads={heads}")
    text_config = dict(
        vocab_size=tok.shape[0],
        hidden_size=t_width,
        intermediate_size=t_fc.shape[0],
        num_hidden_layers=_n_layers(state_dict, "transformer.resblocks."),
        num_attention_heads=text_num_heads,
        max_position_embeddings=tpos.shape[0],
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        projection_dim=tproj.shape[1],
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    vision_config = dict(
        hidden_size=v_width,
        intermediate_size=v_fc.shape[0],
        num_hidden_layers=_n_layers(state_dict, "visual.transformer.resblocks."),
        num_attention_heads=vision_num_heads,
        image_size=grid * patch,
        patch_size=patch,
        num_channels=3,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        projection_dim=vproj.shape[1],
    )
    return CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=vproj.shape[1])
