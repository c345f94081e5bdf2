"""Tiny random models in the layouts of the six hub scorers (built by the library, rocm_rlhf.infra.tiny_hub, which the
pipeline's paper-tiny run uses too), plus plain-torch reference forwards of open_clip's CLIP and ImageReward's BLIP
written from the reference code's structure (not from transformers), to check the key mappings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rocm_rlhf.infra.tiny_hub import (  # noqa: F401  (the tests use them as tm.<name>)
    make_aesthetic_head,
    make_imagereward_state_dict,
    make_openclip_state_dict,
    make_tiny_blip,
    make_tiny_clip,
    write_bert_vocab,
    write_clip_tokenizer,
)

# ----------------------------------------------------------------------------------------------------------------
# plain-torch reference forwards of the original architectures


def _attention(q, k, v, heads: int, mask=None):
    """q (B, Lq, D), k/v (B, Lk, D): softmax(q k^T / sqrt(d_head) + mask) v, heads split along D."""
    b, lq, d = q.shape
    lk = k.shape[1]
    q = q.reshape(b, lq, heads, d // heads).transpose(1, 2)
    k = k.reshape(b, lk, heads, d // heads).transpose(1, 2)
    v = v.reshape(b, lk, heads, d // heads).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
    if mask is not None:
        scores = scores + mask
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, lq, d)


def _openclip_resblock(sd, prefix, x, heads, mask=None):
    w = x.shape[-1]
    h = F.layer_norm(x, (w,), sd[prefix + "ln_1.weight"], sd[prefix + "ln_1.bias"], eps=1e-5)
    qkv = h @ sd[prefix + "attn.in_proj_weight"].t() + sd[prefix + "attn.in_proj_bias"]
    q, k, v = qkv.split(w, dim=-1)
    a = _attention(q, k, v, heads, mask)
    x = x + a @ sd[prefix + "attn.out_proj.weight"].t() + sd[prefix + "attn.out_proj.bias"]
    h = F.layer_norm(x, (w,), sd[prefix + "ln_2.weight"], sd[prefix + "ln_2.bias"], eps=1e-5)
    h = F.gelu(h @ sd[prefix + "mlp.c_fc.weight"].t() + sd[prefix + "mlp.c_fc.bias"])
    return x + h @ sd[prefix + "mlp.c_proj.weight"].t() + sd[prefix + "mlp.c_proj.bias"]


def openclip_reference(sd, pixels, token_ids, v_heads, t_heads):
    """open_clip's CLIP.encode_image / encode_text (ViT tower, standard text tower, GELU), unnormalised."""
    sd = {k: v.to(pixels.dtype) if v.is_floating_point() else v for k, v in sd.items()}
    w = sd["visual.class_embedding"].shape[0]
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=sd["visual.conv1.weight"].shape[-1])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual.class_embedding"].expand(x.shape[0], 1, w), x], dim=1) + sd["visual.positional_embedding"]
    x = F.layer_norm(x, (w,), sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"], eps=1e-5)
    n = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("visual.transformer.resblocks."))
    for i in range(n):
        x = _openclip_resblock(sd, f"visual.transformer.resblocks.{i}.", x, v_heads)
    pooled = F.layer_norm(x[:, 0], (w,), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"], eps=1e-5)
    image = pooled @ sd["visual.proj"]

    tw = sd["token_embedding.weight"].shape[1]
    length = token_ids.shape[1]
    t = sd["token_embedding.weight"][token_ids] + sd["positional_embedding"][:length]
    causal = torch.full((length, length), float("-inf"), dtype=pixels.dtype).triu(1)
    n = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks."))
    for i in range(n):
        t = _openclip_resblock(sd, f"transformer.resblocks.{i}.", t, t_heads, causal)
    t = F.layer_norm(t, (tw,), sd["ln_final.weight"], sd["ln_final.bias"], eps=1e-5)
    text = t[torch.arange(t.shape[0]), token_ids.argmax(dim=-1)] @ sd["text_projection"]
    return image, text


def imagereward_reference(sd, pixels, input_ids, attention_mask, v_heads, t_heads):
    """ImageReward.score's computation on the raw state dict: BLIP ViT (pre-norm blocks, eps 1e-6), BERT layers
    (post-norm, eps 1e-12) with self-attention under the padding mask and cross-attention to all image tokens, the
    first token through the MLP head. Returns the raw reward r (before (r - mean) / std)."""
    sd = {k: v.to(pixels.dtype) if v.is_floating_point() else v for k, v in sd.items()}
    p = "blip.visual_encoder."
    w = sd[p + "cls_token"].shape[-1]
    patch = sd[p + "patch_embed.proj.weight"]
    x = F.conv2d(pixels, patch, sd[p + "patch_embed.proj.bias"], stride=patch.shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([sd[p + "cls_token"].expand(x.shape[0], -1, -1), x], dim=1)
    x = x + sd[p + "pos_embed"][:, : x.shape[1]]
    n = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith(p + "blocks."))
    for i in range(n):
        b = f"{p}blocks.{i}."
        h = F.layer_norm(x, (w,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps=1e-6)
        q, k, v = (h @ sd[b + "attn.qkv.weight"].t() + sd[b + "attn.qkv.bias"]).split(w, dim=-1)
        x = x + _attention(q, k, v, v_heads) @ sd[b + "attn.proj.weight"].t() + sd[b + "attn.proj.bias"]
        h = F.layer_norm(x, (w,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps=1e-6)
        h = F.gelu(h @ sd[b + "mlp.fc1.weight"].t() + sd[b + "mlp.fc1.bias"])
        x = x + h @ sd[b + "mlp.fc2.weight"].t() + sd[b + "mlp.fc2.bias"]
    image = F.layer_norm(x, (w,), sd[p + "norm.weight"], sd[p + "norm.bias"], eps=1e-6)

    t = "blip.text_encoder."
    tw = sd[t + "embeddings.word_embeddings.weight"].shape[1]

    def lin(h, name):
        return h @ sd[name + ".weight"].t() + sd[name + ".bias"]

    def ln(h, name):
        return F.layer_norm(h, (tw,), sd[name + ".weight"], sd[name + ".bias"], eps=1e-12)

    length = input_ids.shape[1]
    h = (
        sd[t + "embeddings.word_embeddings.weight"][input_ids]
        + sd[t + "embeddings.position_embeddings.weight"][:length]
    )
    h = ln(h, t + "embeddings.LayerNorm")
    pad_mask = (1.0 - attention_mask.to(pixels.dtype))[:, None, None, :] * -1e4
    n = 1 + max(int(k.split(".")[4]) for k in sd if k.startswith(t + "encoder.layer."))
    for i in range(n):
        b = f"{t}encoder.layer.{i}."
        a = _attention(
            lin(h, b + "attention.self.query"),
            lin(h, b + "attention.self.key"),
            lin(h, b + "attention.self.value"),
            t_heads,
            pad_mask,
        )
        h = ln(lin(a, b + "attention.output.dense") + h, b + "attention.output.LayerNorm")
        a = _attention(
            lin(h, b + "crossattention.self.query"),
            lin(image, b + "crossattention.self.key"),
            lin(image, b + "crossattention.self.value"),
            t_heads,
        )
        h = ln(lin(a, b + "crossattention.output.dense") + h, b + "crossattention.output.LayerNorm")
        f = F.gelu(lin(h, b + "intermediate.dense"))
        h = ln(lin(f, b + "output.dense") + h, b + "output.LayerNorm")
    r = h[:, 0]
    for idx in (0, 2, 4, 6, 7):
        r = lin(r, f"mlp.layers.{idx}")
    return r.squeeze(-1)
