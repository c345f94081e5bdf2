"""Tiny random models in the layouts of the six hub scorers, saved to disk and loaded back by the scorers' own code,
plus plain-torch reference forwards of open_clip's CLIP and ImageReward's BLIP written from the reference code's
structure (not from transformers), to check the key mappings."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------------------
# tokenizers


def _bytes_to_unicode() -> list[str]:
    """The byte -> printable character table of byte-level BPE (GPT-2 / CLIP), in byte order."""
    from rocm_rlhf.sandbox.models import byte_alphabet

    return byte_alphabet()


def write_clip_tokenizer(folder: Path) -> dict[str, int]:
    """vocab.json (all 256 byte tokens, the same with the end-of-word suffix, then bos and eos as the two largest ids,
    as in CLIP's vocabulary) and an empty merges.txt. Returns the special ids."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return {"vocab_size": len(vocab), "bos": vocab["<|startoftext|>"], "eos": vocab["<|endoftext|>"]}


BERT_WORDS = ["a", "an", "the", "of", "on", "in", "photo", "cat", "dog", "red", "blue", "green", "car", "house"]


def write_bert_vocab(folder: Path) -> Path:
    """A WordPiece vocab.txt: BERT's special tokens, the letters (as words and as ##continuations) and a few words."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", "!"] + letters + ["##" + c for c in letters]
    tokens += [w for w in BERT_WORDS if w not in tokens]
    path = folder / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n")
    return path


# ----------------------------------------------------------------------------------------------------------------
# transformers models (saved with save_pretrained)


def make_tiny_clip(folder: Path, seed: int = 0, image_size: int = 32, patch: int = 8) -> Path:
    """A tiny CLIPModel + CLIP tokenizer files. The final LayerNorm biases share one positive vector so that the image
    and text embeddings have a positive cosine (CLIPScore clamps negatives, where the gradient is zero)."""
    from transformers import CLIPConfig, CLIPModel

    ids = write_clip_tokenizer(folder)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=ids["vocab_size"],
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=ids["bos"],
            eos_token_id=ids["eos"],
            pad_token_id=ids["eos"],
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch,
        ),
        projection_dim=16,
    )
    model = CLIPModel(config)
    with torch.no_grad():
        common = 0.5 + torch.rand(32)
        model.vision_model.post_layernorm.bias.copy_(common)
        model.text_model.final_layer_norm.bias.copy_(common)
        model.text_projection.weight.copy_(model.visual_projection.weight)
    model.save_pretrained(folder)
    return folder


def make_tiny_blip(folder: Path, seed: int = 0, image_size: int = 32, patch: int = 8) -> Path:
    """A tiny BlipForImageTextRetrieval with a BERT tokenizer (+[DEC] bos, [ENC]) saved beside it."""
    from transformers import BertTokenizer, BlipConfig, BlipForImageTextRetrieval

    write_bert_vocab(folder)
    tok = BertTokenizer.from_pretrained(folder)
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    tok.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BlipConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch,
        ),
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=40,
            bos_token_id=tok.bos_token_id,
            pad_token_id=tok.pad_token_id,
            sep_token_id=tok.sep_token_id,
            eos_token_id=tok.sep_token_id,
        ),
        image_text_hidden_size=16,
    )
    model = BlipForImageTextRetrieval(config)
    # BlipVisionConfig initialises with std 1e-10, which makes a random vision tower constant: use O(1) weights
    with torch.no_grad():
        for name, p in model.vision_model.named_parameters():
            if "layer_norm" in name or "layernorm" in name:
                continue
            if p.ndim >= 2 and "embedding" not in name:
                p.copy_(torch.randn_like(p) / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------------------------------------------
# raw checkpoints in the reference layouts


def _ln(g: torch.Generator, width: int, prefix: str, sd: dict) -> None:
    sd[prefix + ".weight"] = 1.0 + 0.1 * torch.randn(width, generator=g)
    sd[prefix + ".bias"] = 0.1 * torch.randn(width, generator=g)


def _lin(g: torch.Generator, n_out: int, n_in: int, prefix: str, sd: dict, bias: bool = True) -> None:
    sd[prefix + ".weight"] = torch.randn(n_out, n_in, generator=g) / math.sqrt(n_in)
    if bias:
        sd[prefix + ".bias"] = 0.1 * torch.randn(n_out, generator=g)


def _openclip_block(g, width: int, mlp: int, prefix: str, sd: dict) -> None:
    _ln(g, width, prefix + "ln_1", sd)
    sd[prefix + "attn.in_proj_weight"] = torch.randn(3 * width, width, generator=g) / math.sqrt(width)
    sd[prefix + "attn.in_proj_bias"] = 0.1 * torch.randn(3 * width, generator=g)
    _lin(g, width, width, prefix + "attn.out_proj", sd)
    _ln(g, width, prefix + "ln_2", sd)
    _lin(g, mlp, width, prefix + "mlp.c_fc", sd)
    _lin(g, width, mlp, prefix + "mlp.c_proj", sd)


OPENCLIP_TINY = dict(
    v_width=24, v_layers=2, v_heads=3, patch=8, image_size=32, t_width=16, t_layers=2, t_heads=2, embed=12, context=77
)


def make_openclip_state_dict(vocab_size: int, seed: int = 0, **overrides) -> dict[str, torch.Tensor]:
    """An open_clip ViT CLIP state dict (keys and shapes as open_clip's CLIP with a standard text tower)."""
    c = {**OPENCLIP_TINY, **overrides}
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = OrderedDict()
    vw, tw = c["v_width"], c["t_width"]
    grid = c["image_size"] // c["patch"]
    sd["positional_embedding"] = 0.1 * torch.randn(c["context"], tw, generator=g)
    sd["text_projection"] = torch.randn(tw, c["embed"], generator=g) / math.sqrt(tw)
    sd["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    sd["visual.class_embedding"] = 0.1 * torch.randn(vw, generator=g)
    sd["visual.positional_embedding"] = 0.1 * torch.randn(grid * grid + 1, vw, generator=g)
    sd["visual.proj"] = torch.randn(vw, c["embed"], generator=g) / math.sqrt(vw)
    sd["visual.conv1.weight"] = torch.randn(vw, 3, c["patch"], c["patch"], generator=g) / math.sqrt(3 * c["patch"] ** 2)
    _ln(g, vw, "visual.ln_pre", sd)
    for i in range(c["v_layers"]):
        _openclip_block(g, vw, 4 * vw, f"visual.transformer.resblocks.{i}.", sd)
    _ln(g, vw, "visual.ln_post", sd)
    sd["token_embedding.weight"] = 0.1 * torch.randn(vocab_size, tw, generator=g)
    for i in range(c["t_layers"]):
        _openclip_block(g, tw, 4 * tw, f"transformer.resblocks.{i}.", sd)
    _ln(g, tw, "ln_final", sd)
    sd["attn_mask"] = torch.full((c["context"], c["context"]), float("-inf")).triu(1)
    return sd


IMAGEREWARD_TINY = dict(
    v_width=24,
    v_layers=2,
    v_heads=3,
    patch=8,
    image_size=32,
    t_width=16,
    t_layers=2,
    t_heads=2,
    t_mlp=40,
    max_pos=40,
    head=(16, 20, 8, 8, 4, 1),
)


def make_imagereward_state_dict(vocab_size: int, seed: int = 0, **overrides) -> dict[str, torch.Tensor]:
    """An ImageReward state dict (keys as ``ImageReward.state_dict()``: blip.visual_encoder, blip.text_encoder with
    cross-attention, blip.vision_proj/text_proj, mlp.layers)."""
    c = {**IMAGEREWARD_TINY, **overrides}
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = OrderedDict()
    vw, tw = c["v_width"], c["t_width"]
    grid = c["image_size"] // c["patch"]
    p = "blip.visual_encoder."
    sd[p + "cls_token"] = 0.1 * torch.randn(1, 1, vw, generator=g)
    sd[p + "pos_embed"] = 0.1 * torch.randn(1, grid * grid + 1, vw, generator=g)
    _lin(g, vw, 3 * c["patch"] ** 2, p + "patch_embed.proj", sd)
    sd[p + "patch_embed.proj.weight"] = sd[p + "patch_embed.proj.weight"].reshape(vw, 3, c["patch"], c["patch"])
    for i in range(c["v_layers"]):
        b = f"{p}blocks.{i}."
        _ln(g, vw, b + "norm1", sd)
        _lin(g, 3 * vw, vw, b + "attn.qkv", sd)
        _lin(g, vw, vw, b + "attn.proj", sd)
        _ln(g, vw, b + "norm2", sd)
        _lin(g, 4 * vw, vw, b + "mlp.fc1", sd)
        _lin(g, vw, 4 * vw, b + "mlp.fc2", sd)
    _ln(g, vw, p + "norm", sd)
    t = "blip.text_encoder."
    sd[t + "embeddings.position_ids"] = torch.arange(c["max_pos"]).expand(1, -1)
    sd[t + "embeddings.word_embeddings.weight"] = 0.5 * torch.randn(vocab_size, tw, generator=g)
    sd[t + "embeddings.position_embeddings.weight"] = 0.5 * torch.randn(c["max_pos"], tw, generator=g)
    _ln(g, tw, t + "embeddings.LayerNorm", sd)
    for i in range(c["t_layers"]):
        b = f"{t}encoder.layer.{i}."
        for att, kv_width in (("attention", tw), ("crossattention", vw)):
            _lin(g, tw, tw, b + f"{att}.self.query", sd)
            _lin(g, tw, kv_width, b + f"{att}.self.key", sd)
            _lin(g, tw, kv_width, b + f"{att}.self.value", sd)
            _lin(g, tw, tw, b + f"{att}.output.dense", sd)
            _ln(g, tw, b + f"{att}.output.LayerNorm", sd)
        _lin(g, c["t_mlp"], tw, b + "intermediate.dense", sd)
        _lin(g, tw, c["t_mlp"], b + "output.dense", sd)
        _ln(g, tw, b + "output.LayerNorm", sd)
    _lin(g, 8, vw, "blip.vision_proj", sd)
    _lin(g, 8, tw, "blip.text_proj", sd)
    assert c["head"][0] == tw
    for idx, (n_in, n_out) in zip((0, 2, 4, 6, 7), zip(c["head"][:-1], c["head"][1:])):
        _lin(g, n_out, n_in, f"mlp.layers.{idx}", sd)
    return sd


def make_aesthetic_head(path: Path, widths=(16, 24, 8, 8, 4, 1), seed: int = 0) -> dict[str, torch.Tensor]:
    """The improved-aesthetic-predictor .pth layout: an OrderedDict with layers.{0,2,4,6,7}.{weight,bias}."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = OrderedDict()
    for idx, (n_in, n_out) in zip((0, 2, 4, 6, 7), zip(widths[:-1], widths[1:])):
        _lin(g, n_out, n_in, f"layers.{idx}", sd)
    torch.save(sd, path)
    return sd


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
