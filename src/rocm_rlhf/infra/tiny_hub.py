"""Tiny random stand-ins of the paper's hub models and prompt dataset, saved in the hub repositories' own layouts.

:func:`build_tiny_hub` writes one folder per hub repository that ``config/paper.yaml`` uses, named by its hub id, with
the files the loaders read, so the scorers and pipelines load them with nothing but the model ids changed; only the
sizes differ, and fixed seeds make the same call write the same tensors. Its pieces (:func:`build_tiny_pipeline`,
:func:`build_tiny_lcm`, :func:`make_tiny_clip`, :func:`make_tiny_blip`, :func:`make_openclip_state_dict`,
:func:`make_imagereward_state_dict`, :func:`make_aesthetic_head`, :func:`write_pickapic`, ...) also build the unit
tests' tiny models (``tests/_tiny_models.py``). The folders and their contents: docs/method.md, section
'Infrastructure notes' (The tiny hub).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path

import torch

# ----------------------------------------------------------------------------------------------------------------
# tokenizers


def write_clip_tokenizer(folder: Path) -> dict[str, int]:
    """vocab.json (all 256 byte tokens, the same with the end-of-word suffix, then bos and eos as the two largest ids,
    as in CLIP's vocabulary) and an empty merges.txt. Returns the special ids."""
    from ..sandbox.models import byte_alphabet

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = byte_alphabet()
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


def clip_tokenizer(folder: Path, model_max_length: int = 77):
    """The byte-level CLIPTokenizer of :func:`write_clip_tokenizer`, written to ``folder`` and loaded back."""
    from transformers import CLIPTokenizer

    write_clip_tokenizer(folder)
    return CLIPTokenizer.from_pretrained(folder, model_max_length=model_max_length)


BERT_WORDS = ["a", "an", "the", "of", "on", "in", "photo", "cat", "dog", "red", "blue", "green", "car", "house"]


def write_bert_vocab(folder: Path) -> Path:
    """A WordPiece vocab.txt: BERT's special tokens, the letters (as words and as ##continuations) and a few words."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", "!"] + letters + ["##" + c for c in letters]
    tokens += [w for w in BERT_WORDS if w not in tokens]
    path = folder / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n")
    return path


# ----------------------------------------------------------------------------------------------------------------
# transformers models (saved with save_pretrained)


def _tower(width: int = 32, layers: int = 2, heads: int = 2, **extra) -> dict:
    """The config of one tiny transformer tower (MLP twice as wide), plus ``extra`` keys."""
    return dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers, num_attention_heads=heads,
                **extra)


def make_tiny_clip(folder: Path, seed: int = 0, image_size: int = 32, patch: int = 8) -> Path:
    """A tiny CLIPModel + CLIP tokenizer files. The final LayerNorm biases share one positive vector so that the image
    and text embeddings have a positive cosine (CLIPScore clamps negatives, where the gradient is zero)."""
    from transformers import CLIPConfig, CLIPModel

    ids = write_clip_tokenizer(folder)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=_tower(vocab_size=ids["vocab_size"], max_position_embeddings=77, bos_token_id=ids["bos"],
                           eos_token_id=ids["eos"], pad_token_id=ids["eos"]),
        vision_config=_tower(image_size=image_size, patch_size=patch),
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
        vision_config=_tower(image_size=image_size, patch_size=patch),
        text_config=_tower(vocab_size=len(tok), max_position_embeddings=40, bos_token_id=tok.bos_token_id,
                           pad_token_id=tok.pad_token_id, sep_token_id=tok.sep_token_id,
                           eos_token_id=tok.sep_token_id),
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
# diffusers pipelines


def build_tiny_pipeline(path: Path, kind: str = "lcm", seed: int = 0, sample_size: int = 8, tokenizer=None) -> Path:
    """A random LatentConsistencyModelPipeline (``kind="lcm"``: UNet with ``time_cond_proj_dim``, LCMScheduler) or
    StableDiffusionPipeline (``kind="sd"``: PNDMScheduler with SD 1.5's config) with a VAE (2 * sample_size px <->
    4 x sample_size x sample_size latents), saved with save_pretrained and no safety checker.

    ``tokenizer``: a CLIPTokenizer, whose ``model_max_length`` is the text encoder's positions; default a BPE
    trained on three captions, 12 tokens long (:func:`rocm_rlhf.sandbox.models.train_tokenizer`)."""
    from diffusers import (AutoencoderKL, LatentConsistencyModelPipeline, PNDMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..sandbox.models import SCHEDULE, make_lcm_scheduler, train_tokenizer

    if kind not in ("lcm", "sd"):
        raise ValueError(f"kind must be 'lcm' or 'sd', got {kind!r}")
    torch.manual_seed(seed)
    tok = tokenizer or train_tokenizer(["a red circle on the left", "a blue square at the top", "a green triangle"],
                                       max_length=12)
    te = CLIPTextModel(CLIPTextConfig(**_tower(32, 1, vocab_size=len(tok), max_position_embeddings=tok.model_max_length,
                                              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                              pad_token_id=tok.pad_token_id)))
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=8, sample_size=2 * sample_size,
                        mid_block_add_attention=False, scaling_factor=0.5)
    unet = UNet2DConditionModel(sample_size=sample_size, in_channels=4, out_channels=4,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(16, 32),
                                layers_per_block=1, cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
                                time_cond_proj_dim=8 if kind == "lcm" else None)
    parts = dict(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, safety_checker=None, feature_extractor=None,
                 requires_safety_checker=False)
    if kind == "lcm":
        pipe = LatentConsistencyModelPipeline(scheduler=make_lcm_scheduler(), **parts)
    else:  # stable-diffusion-v1-5's scheduler/scheduler_config.json
        scheduler = PNDMScheduler(**SCHEDULE, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)
        pipe = StableDiffusionPipeline(scheduler=scheduler, **parts)
    pipe.save_pretrained(path)
    return Path(path)


def build_tiny_lcm(path: Path, seed: int = 0, sample_size: int = 8) -> Path:
    """The unit tests' random LatentConsistencyModelPipeline: :func:`build_tiny_pipeline` with its default tokenizer."""
    return build_tiny_pipeline(path, "lcm", seed=seed, sample_size=sample_size)


# SD 1.5's (and LCM Dreamshaper v7's) feature_extractor/preprocessor_config.json
FEATURE_EXTRACTOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}


def add_safety_checker(pipeline_dir: Path, seed: int = 0) -> None:
    """Add what the hub's SD 1.5 and LCM Dreamshaper v7 folders also hold: a (tiny, random) safety_checker/, the
    feature_extractor/ config, and their entries in model_index.json with ``requires_safety_checker: true``. The
    pipeline loaders pass ``safety_checker=None``, so these are never loaded; they are here so that the folder is
    the one the loaders meet on the hub."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    pipeline_dir = Path(pipeline_dir)
    torch.manual_seed(seed)
    config = CLIPConfig(text_config=_tower(16, 1), vision_config=_tower(16, 1, image_size=32, patch_size=8),
                        projection_dim=8)
    StableDiffusionSafetyChecker(config).save_pretrained(pipeline_dir / "safety_checker")
    (pipeline_dir / "feature_extractor").mkdir(exist_ok=True)
    (pipeline_dir / "feature_extractor" / "preprocessor_config.json").write_text(
        json.dumps(FEATURE_EXTRACTOR, indent=2) + "\n")
    index_path = pipeline_dir / "model_index.json"
    index = json.loads(index_path.read_text())
    index.update(safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
                 feature_extractor=["transformers", "CLIPImageProcessor"], requires_safety_checker=True)
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# the Pick-a-Pic v1 captions

# the columns of yuvalkirstain/pickapic_v1_no_images (pickapic_v1 without jpg_0 and jpg_1), in the hub's order, and
# its splits (with far fewer rows: 583,747 / 17,439 / 14,073 / 500 / 500 on the hub)
PICKAPIC_COLUMNS = ("are_different", "best_image_uid", "caption", "created_at", "has_label", "image_0_uid",
                    "image_0_url", "image_1_uid", "image_1_url", "label_0", "label_1", "model_0", "model_1",
                    "ranking_id", "user_id", "num_example_per_prompt", "__index_level_0__")
PICKAPIC_SPLITS = {"train": 96, "validation": 24, "test": 24, "validation_unique": 16, "test_unique": 16}
_SUBJECTS = ["a cat", "an old lighthouse", "a red fox", "a castle", "a robot", "a bowl of ramen", "a dragon",
             "a sailboat", "an astronaut", "a forest cabin", "a steampunk owl", "a city street", "a teapot"]
_STYLES = ["oil painting", "watercolor", "digital art", "photograph", "pixel art", "pencil sketch",
           "studio ghibli style", "cinematic lighting", "8k, highly detailed", "low poly render"]
_PLACES = ["at sunset", "in the rain", "on the moon", "under the sea", "in a snowy field", "at night",
           "in a busy market", "on a mountain top"]


def pickapic_frame(split: str, n: int, seed: int = 0):
    """``n`` rows of a Pick-a-Pic v1 split in the hub dataset's columns and dtypes: synthetic captions (distinct per
    split; several rows per caption, as in the real data where a caption is ranked more than once, except in the
    ``*_unique`` splits; a few one-word captions, which the prompt cleaning drops), two images per row with uids,
    urls, models and labels."""
    import numpy as np
    import pandas as pd

    offset = list(PICKAPIC_SPLITS).index(split) if split in PICKAPIC_SPLITS else len(PICKAPIC_SPLITS)
    rng = np.random.default_rng([seed, offset])
    unique = split.endswith("_unique")  # validation_unique, test_unique: one row per caption
    n_captions = n if unique else max(1, (2 * n) // 3)
    captions = []
    for i in range(n_captions):
        k = offset * 150 + i  # distinct (subject, style, place) for k < 13 * 10 * 8, so distinct across splits
        subject, style, place = (_SUBJECTS[k % len(_SUBJECTS)], _STYLES[(k // len(_SUBJECTS)) % len(_STYLES)],
                                 _PLACES[k // (len(_SUBJECTS) * len(_STYLES)) % len(_PLACES)])
        captions.append(subject.split()[-1] if i % 11 == 5 else f"{subject} {place}, {style}")
    rows = np.arange(n) if unique else rng.integers(0, n_captions, size=n)
    caption = [captions[int(r)] for r in rows]
    per_caption = pd.Series(rows).map(pd.Series(rows).value_counts()).to_numpy()
    label_0 = rng.choice([0.0, 0.5, 1.0], size=n)
    uid = [[f"{rng.integers(1 << 62):016x}-{offset}-{i}-{j}" for j in (0, 1)] for i in range(n)]
    models = ["stabilityai/stable-diffusion-2-1", "CompVis/stable-diffusion-v1-4", "runwayml/stable-diffusion-v1-5"]
    frame = pd.DataFrame({
        "are_different": rng.random(n) < 0.9,
        "best_image_uid": [u[0] if l0 == 1.0 else (u[1] if l0 == 0.0 else "") for u, l0 in zip(uid, label_0)],
        "caption": caption,
        "created_at": pd.Timestamp("2023-03-01") + pd.to_timedelta(rng.integers(0, 86400 * 60, size=n), unit="s"),
        "has_label": np.ones(n, dtype=bool),
        "image_0_uid": [u[0] for u in uid],
        "image_0_url": [f"https://images.pickapic.io/{u[0]}.png" for u in uid],
        "image_1_uid": [u[1] for u in uid],
        "image_1_url": [f"https://images.pickapic.io/{u[1]}.png" for u in uid],
        "label_0": label_0,
        "label_1": 1.0 - label_0,
        "model_0": [models[int(i)] for i in rng.integers(0, len(models), size=n)],
        "model_1": [models[int(i)] for i in rng.integers(0, len(models), size=n)],
        "ranking_id": rng.integers(0, 10**6, size=n).astype("int64"),
        "user_id": rng.integers(0, 10**5, size=n).astype("int64"),
        "num_example_per_prompt": per_caption.astype("int64"),
        "__index_level_0__": np.arange(n, dtype="int64"),
    })
    return frame.astype({"created_at": "datetime64[ns]"})


def _pickapic_schema():
    """The arrow schema of the hub dataset's parquet files (its README's dataset_info: string, not large_string)."""
    import pyarrow as pa

    types = {"are_different": pa.bool_(), "created_at": pa.timestamp("ns"), "has_label": pa.bool_(),
             "label_0": pa.float64(), "label_1": pa.float64(), "ranking_id": pa.int64(), "user_id": pa.int64(),
             "num_example_per_prompt": pa.int64(), "__index_level_0__": pa.int64()}
    return pa.schema([(c, types.get(c, pa.string())) for c in PICKAPIC_COLUMNS])


def write_pickapic(folder: Path, seed: int = 0, splits: dict[str, int] | None = None) -> Path:
    """The hub dataset's file layout: ``folder/data/<split>-00000-of-00001.parquet`` per split (``load_dataset`` on
    the folder finds the splits by these names)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split, n in (splits or PICKAPIC_SPLITS).items():
        table = pa.Table.from_pandas(pickapic_frame(split, n, seed), schema=_pickapic_schema(), preserve_index=False)
        pq.write_table(table, folder / "data" / f"{split}-00000-of-00001.parquet")
    return folder


# ----------------------------------------------------------------------------------------------------------------
# the whole set

LCM_ID = "SimianLuo/LCM_Dreamshaper_v7"
SD_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
PICKSCORE_ID = "yuvalkirstain/PickScore_v1"
LAION_H14_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
CLIP_L14_ID = "openai/clip-vit-large-patch14"
HPSV2_ID, HPSV2_FILE = "xswu/HPSv2", "HPS_v2.1_compressed.pt"
AESTHETIC_ID, AESTHETIC_FILE = "camenduru/improved-aesthetic-predictor", "sac+logos+ava1-l14-linearMSE.pth"
BLIP_ID = "Salesforce/blip-itm-large-coco"
IMAGEREWARD_ID, IMAGEREWARD_FILE = "THUDM/ImageReward", "ImageReward.pt"
BERT_ID = "google-bert/bert-base-uncased"
PICKAPIC_ID = "datasets/yuvalkirstain/pickapic_v1_no_images"


def _save_clip_processor(folder: Path, size: int) -> None:
    """CLIP tokenizer files (tokenizer_config.json, special_tokens_map.json, vocab.json, merges.txt; 77 tokens) and
    a preprocessor_config.json for ``size`` px, as a CLIP repository on the hub holds them."""
    clip_tokenizer(folder).save_pretrained(folder)
    config = dict(FEATURE_EXTRACTOR, crop_size={"height": size, "width": size}, size={"shortest_edge": size},
                  image_processor_type="CLIPImageProcessor")
    del config["feature_extractor_type"]
    (folder / "preprocessor_config.json").write_text(json.dumps(config, indent=2) + "\n")


def build_tiny_hub(root: Path, seed: int = 0) -> dict:
    """Every tiny stand-in of the table in docs/method.md (section 'Infrastructure notes'), under ``root/<hub id>``;
    returns a manifest ``{"root": ..., "models": {hub id: [files]}}`` (paths relative to root)."""
    import tempfile

    from transformers import BertTokenizer

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    image_size, patch = 32, 8

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = clip_tokenizer(Path(tmp))  # saved into each pipeline's tokenizer/
    for i, (repo, kind) in enumerate(((LCM_ID, "lcm"), (SD_ID, "sd"))):
        build_tiny_pipeline(root / repo, kind, seed=seed + i, tokenizer=tokenizer)
        add_safety_checker(root / repo, seed=seed + i)

    for i, repo in enumerate((PICKSCORE_ID, CLIP_L14_ID)):
        make_tiny_clip(root / repo, seed=seed + 10 + i, image_size=image_size, patch=patch)
        _save_clip_processor(root / repo, image_size)
    _save_clip_processor(root / LAION_H14_ID, image_size)

    hps = make_openclip_state_dict(len(tokenizer), seed=seed + 20, v_width=32, t_width=32, embed=16, patch=patch,
                                   image_size=image_size)  # widths of 16 heads, as ViT-H-14
    (root / HPSV2_ID).mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": hps}, root / HPSV2_ID / HPSV2_FILE)

    (root / AESTHETIC_ID).mkdir(parents=True, exist_ok=True)
    make_aesthetic_head(root / AESTHETIC_ID / AESTHETIC_FILE, widths=(16, 32, 16, 8, 4, 1), seed=seed + 30)

    make_tiny_blip(root / BLIP_ID, seed=seed + 40, image_size=image_size, patch=patch)

    write_bert_vocab(root / BERT_ID)
    bert = BertTokenizer.from_pretrained(root / BERT_ID)
    bert.save_pretrained(root / BERT_ID)
    ir = make_imagereward_state_dict(len(bert) + 2, seed=seed + 50, v_width=32, t_width=24, t_mlp=48,
                                     head=(24, 32, 16, 8, 4, 1), patch=patch, image_size=image_size)
    (root / IMAGEREWARD_ID).mkdir(parents=True, exist_ok=True)  # + [DEC] and [ENC]; 16 and 12 heads, as ViT-L, BERT
    torch.save(ir, root / IMAGEREWARD_ID / IMAGEREWARD_FILE)

    write_pickapic(root / PICKAPIC_ID, seed=seed)

    repos = [LCM_ID, SD_ID, PICKSCORE_ID, LAION_H14_ID, CLIP_L14_ID, HPSV2_ID, AESTHETIC_ID, BLIP_ID, IMAGEREWARD_ID,
             BERT_ID, PICKAPIC_ID]
    return {"root": str(root), "models": {r: sorted(str(p.relative_to(root / r)) for p in (root / r).rglob("*")
                                                    if p.is_file()) for r in repos}}
