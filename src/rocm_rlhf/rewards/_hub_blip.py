"""ImageReward's checkpoint (BLIP-repo layout) as transformers Blip modules plus the MLP head.

API: :func:`imagereward_to_blip_state_dict` (``ImageReward.pt``'s keys renamed to transformers' Blip layout, after
transformers' ``convert_blip_original_pytorch_to_hf.py``), :func:`imagereward_configs` (the vision and text configs
from the mapped tensors' shapes; head counts are arguments) and :class:`ImageRewardNet` (BLIP ViT + BERT with
cross-attention + MLP head, the raw reward). The key correspondence, layer-norm eps and head counts: docs/method.md,
section 'Rewards and metrics' (Loading ImageReward).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from ._hub_common import MLPHead

_VIT_BLOCK = re.compile(r"^blip\.visual_encoder\.blocks\.(\d+)\.(.+)$")
_VIT_BLOCK_RENAMES = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.qkv": "self_attn.qkv",
    "attn.proj": "self_attn.projection",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_VIT_PLAIN = {
    "blip.visual_encoder.cls_token": "vision_model.embeddings.class_embedding",
    "blip.visual_encoder.pos_embed": "vision_model.embeddings.position_embedding",
    "blip.visual_encoder.patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
    "blip.visual_encoder.patch_embed.proj.bias": "vision_model.embeddings.patch_embedding.bias",
    "blip.visual_encoder.norm.weight": "vision_model.post_layernorm.weight",
    "blip.visual_encoder.norm.bias": "vision_model.post_layernorm.bias",
}
_DROPPED_PREFIXES = ("blip.vision_proj.", "blip.text_proj.")
_DROPPED = {"blip.text_encoder.embeddings.position_ids"}


def imagereward_to_blip_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an ImageReward state dict to the keys of :class:`ImageRewardNet`; unknown keys are an error."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if key in _DROPPED or key.startswith(_DROPPED_PREFIXES):
            continue
        if key in _VIT_PLAIN:
            out[_VIT_PLAIN[key]] = value
        elif m := _VIT_BLOCK.match(key):
            module, _, kind = m.group(2).rpartition(".")
            if module not in _VIT_BLOCK_RENAMES:
                unknown.append(key)
                continue
            out[f"vision_model.encoder.layers.{m.group(1)}.{_VIT_BLOCK_RENAMES[module]}.{kind}"] = value
        elif key.startswith("blip.text_encoder."):
            out["text_encoder." + key.removeprefix("blip.text_encoder.")] = value
        elif key.startswith("mlp.layers."):
            out["head." + key.removeprefix("mlp.")] = value
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(sorted(unknown)[:8]) + (" ..." if len(unknown) > 8 else "")
        raise ValueError(f"not an ImageReward checkpoint of the expected layout: {len(unknown)} unknown keys ({shown})")
    return out


def _n_layers(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in state_dict if (m := pat.match(k))}
    if not idx:
        raise ValueError(f"no layers under '{prefix}' in the ImageReward checkpoint")
    return max(idx) + 1


def imagereward_configs(mapped: Mapping[str, torch.Tensor], *, vision_num_heads: int, text_num_heads: int):
    """(BlipVisionConfig, BlipTextConfig, head widths) of a mapped ImageReward state dict (sizes from shapes)."""
    from transformers import BlipTextConfig, BlipVisionConfig

    try:
        cls = mapped["vision_model.embeddings.class_embedding"]
        pos = mapped["vision_model.embeddings.position_embedding"]
        patch_w = mapped["vision_model.embeddings.patch_embedding.weight"]
        v_fc = mapped["vision_model.encoder.layers.0.mlp.fc1.weight"]
        words = mapped["text_encoder.embeddings.word_embeddings.weight"]
        tpos = mapped["text_encoder.embeddings.position_embeddings.weight"]
        t_fc = mapped["text_encoder.encoder.layer.0.intermediate.dense.weight"]
        cross_k = mapped["text_encoder.encoder.layer.0.crossattention.self.key.weight"]
    except KeyError as err:
        raise ValueError(f"not an ImageReward checkpoint: weight {err} missing") from None
    v_width, patch = cls.shape[-1], patch_w.shape[-1]
    grid = round((pos.shape[1] - 1) ** 0.5)
    if grid * grid + 1 != pos.shape[1]:
        raise ValueError(f"visual_encoder.pos_embed has {pos.shape[1]} tokens, not a square grid plus one")
    t_width = words.shape[1]
    if cross_k.shape[1] != v_width:
        raise ValueError(f"text cross-attention expects width {cross_k.shape[1]} but the ViT has width {v_width}")
    for name, width, heads in (("vision", v_width, vision_num_heads), ("text", t_width, text_num_heads)):
        if width % heads:
            raise ValueError(f"{name} width {width} is not divisible by {name}_num_heads={heads}")
    vision = BlipVisionConfig(
        hidden_size=v_width,
        intermediate_size=v_fc.shape[0],
        num_hidden_layers=_n_layers(mapped, "vision_model.encoder.layers."),
        num_attention_heads=vision_num_heads,
        image_size=grid * patch,
        patch_size=patch,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
    )
    text = BlipTextConfig(
        vocab_size=words.shape[0],
        hidden_size=t_width,
        encoder_hidden_size=v_width,
        intermediate_size=t_fc.shape[0],
        num_hidden_layers=_n_layers(mapped, "text_encoder.encoder.layer."),
        num_attention_heads=text_num_heads,
        max_position_embeddings=tpos.shape[0],
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        is_decoder=True,  # transformers creates the cross-attention layers only for decoders; run with is_decoder=False
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
        sep_token_id=None,
    )
    return vision, text, MLPHead.widths_from(mapped, prefix="head.layers.")


class ImageRewardNet(nn.Module):
    """BLIP ViT + BERT with cross-attention + MLP head: ``forward(pixels, input_ids, attention_mask)`` returns the raw
    reward r (B,) = head(text_encoder(ids, cross-attending to vision tokens)[:, 0]) before (r - mean) / std."""

    def __init__(self, vision_config, text_config, head_widths):
        super().__init__()
        from transformers import BlipTextModel, BlipVisionModel

        self.vision_model = BlipVisionModel(vision_config)
        self.text_encoder = BlipTextModel(text_config, add_pooling_layer=False)
        self.head = MLPHead(head_widths)

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image_embeds = self.vision_model(pixel_values=pixels).last_hidden_state
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        text = self.text_encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_atts,
            is_decoder=False,
        ).last_hidden_state
        return self.head(text[:, 0, :]).squeeze(-1)
