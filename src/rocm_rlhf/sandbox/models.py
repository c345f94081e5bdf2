"""The sandbox's tiny models, in the same Hugging Face classes and folder formats as the paper's hub models.

API: :func:`train_tokenizer` (byte-level BPE saved as a ``CLIPTokenizer``), :func:`make_text_encoder`
(``CLIPTextModel``), :func:`make_vae` (``AutoencoderKL``, 32x32x3 <-> 8x8x4), :func:`make_unet`
(``UNet2DConditionModel``; with ``time_cond_proj_dim`` for the LCM), :func:`make_ddim_scheduler` (the teacher's) and
:func:`make_lcm_scheduler` (the student's) on Stable Diffusion's ``SCHEDULE``, :class:`SandboxSizes`,
:func:`byte_alphabet`, :func:`count_parameters`. The models and their sizes: docs/method.md, section 'The sandbox
world' (The tiny models).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, DDIMScheduler, LCMScheduler, UNet2DConditionModel
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# the pre-tokenisation of transformers' CLIPTokenizer (so the trained merges apply identically after loading)
_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""

SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@dataclass(frozen=True)
class SandboxSizes:
    """Widths of the tiny models: the config's ``sandbox.models`` section (``max_tokens`` and ``latent_channels``
    are fixed: the grammar's captions fit 16 tokens, and 4 latent channels is the SD layout)."""

    text_width: int = 64
    text_layers: int = 2
    max_tokens: int = 16
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (8, 16, 32)  # two down-samplings: 32x32x3 <-> 8x8x4
    unet_channels: tuple[int, ...] = (32, 64)
    unet_layers: int = 1
    attention_head_dim: int = 8
    time_cond_proj_dim: int = 32


def byte_alphabet() -> list[str]:
    """The 256 byte-level characters (GPT-2 / CLIP ``bytes_to_unicode``), in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(
        range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def train_tokenizer(texts: list[str], vocab_size: int = 600, max_length: int = 16) -> CLIPTokenizer:
    """A CLIP-style byte-level BPE tokenizer trained on ``texts``."""
    byte_chars = byte_alphabet()
    tok = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix="</w>", unk_token=EOS, fuse_unk=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=byte_chars,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    merges = [tuple(m) if not isinstance(m, str) else tuple(m.split(" "))
              for m in json.loads(tok.to_str())["model"]["merges"]]
    # The trainer's merges are deterministic but its ids are not (hash order). Number the vocabulary canonically:
    # the special tokens, every byte character (in byte order) inside a word and at its end, then each merge result in
    # merge order. Every byte is in the vocabulary, so no character is ever dropped.
    vocab: dict[str, int] = {BOS: 0, EOS: 1}
    for piece in byte_chars + [ch + "</w>" for ch in byte_chars]:
        vocab.setdefault(piece, len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    tokenizer.model_max_length = max_length
    return tokenizer


def make_text_encoder(tokenizer: CLIPTokenizer, sizes: SandboxSizes) -> CLIPTextModel:
    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=sizes.text_width,
        intermediate_size=2 * sizes.text_width,
        num_hidden_layers=sizes.text_layers,
        num_attention_heads=max(1, sizes.text_width // 16),
        max_position_embeddings=sizes.max_tokens,
        projection_dim=sizes.text_width,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(cfg)


def make_vae(sizes: SandboxSizes) -> AutoencoderKL:
    n = len(sizes.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(sizes.vae_channels),
        layers_per_block=1,
        latent_channels=sizes.latent_channels,
        norm_num_groups=8,
        sample_size=32,
        scaling_factor=1.0,  # set from the data after training (as SD's 0.18215)
        mid_block_add_attention=False,
    )


def make_unet(sizes: SandboxSizes, sample_size: int, cross_attention_dim: int, lcm: bool = False) -> UNet2DConditionModel:
    n = len(sizes.unet_channels)
    down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=sizes.latent_channels,
        out_channels=sizes.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(sizes.unet_channels),
        layers_per_block=sizes.unet_layers,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=sizes.attention_head_dim,
        norm_num_groups=8,
        time_cond_proj_dim=sizes.time_cond_proj_dim if lcm else None,
    )


def make_ddim_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def make_lcm_scheduler(original_inference_steps: int = 50) -> LCMScheduler:
    return LCMScheduler(
        **SCHEDULE, clip_sample=False, set_alpha_to_one=True, original_inference_steps=original_inference_steps
    )


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
