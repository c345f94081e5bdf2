"""Shared fixtures: tiny random pipelines saved in Hugging Face formats (the hub code path, offline)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def build_tiny_lcm(path: Path, seed: int = 0, sample_size: int = 8) -> Path:
    """A random LatentConsistencyModelPipeline with a VAE (16x16 px <-> 4x8x8), saved with save_pretrained."""
    from diffusers import AutoencoderKL, LatentConsistencyModelPipeline, UNet2DConditionModel

    from rocm_rlhf.sandbox.models import make_lcm_scheduler, train_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = train_tokenizer(["a red circle on the left", "a blue square at the top", "a green triangle"],
                          max_length=12)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=12,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id))
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=8, sample_size=2 * sample_size,
                        mid_block_add_attention=False, scaling_factor=0.5)
    unet = UNet2DConditionModel(sample_size=sample_size, in_channels=4, out_channels=4,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(16, 32),
                                layers_per_block=1, cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
                                time_cond_proj_dim=8)
    pipe = LatentConsistencyModelPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet,
                                          scheduler=make_lcm_scheduler(), safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_lcm_dir(tmp_path_factory) -> Path:
    return build_tiny_lcm(tmp_path_factory.mktemp("tiny_lcm") / "pipe")


def assert_same_adapter(run_a: Path, run_b: Path) -> None:
    """The adapters saved in two run folders (``<run>/adapter``) hold the same tensors, bit for bit."""
    from safetensors.torch import load_file

    a = load_file(Path(run_a) / "adapter" / "pytorch_lora_weights.safetensors")
    b = load_file(Path(run_b) / "adapter" / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
