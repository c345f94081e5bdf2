"""The sandbox's tiny model builders: a tokenizer that is deterministic across processes and drops no character."""

from __future__ import annotations

import subprocess
import sys

CODE = (
    "import hashlib, json\n"
    "from rocm_rlhf.sandbox.models import train_tokenizer\n"
    "from rocm_rlhf.sandbox.captions import all_captions\n"
    "t = train_tokenizer([c.text for c in all_captions()] + [''])\n"
    "print(hashlib.sha256(json.dumps(t.get_vocab(), sort_keys=True).encode()).hexdigest(),"
    " t('a large red circle on the left').input_ids)\n"
)


def test_tokenizer_is_the_same_in_every_process():
    """The tokenizers trainer numbers its vocabulary in hash order; ours must not depend on the process."""
    outs = {subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert len(outs) == 1, outs


def test_tokenizer_keeps_every_character_and_round_trips(tmp_path):
    from transformers import CLIPTokenizer

    from rocm_rlhf.sandbox.models import train_tokenizer

    tok = train_tokenizer(["a red circle", "a blue square on the left"], max_length=32)
    tok.save_pretrained(tmp_path)
    loaded = CLIPTokenizer.from_pretrained(tmp_path)
    text = "a red circle, émoji ✓ 42!"
    ids = loaded(text).input_ids
    assert ids == tok(text).input_ids
    assert loaded.unk_token_id not in ids[1:-1]  # nothing silently dropped or unknown
    assert loaded.decode(ids, skip_special_tokens=True).replace(" ", "") == text.lower().replace(" ", "")
    assert len(loaded("a red circle").input_ids) == 5  # trained words are single tokens (+ bos, eos)


def test_config_sizes_reach_the_models():
    """sandbox.models sets the widths the sandbox stages build with; the defaults are SandboxSizes' defaults."""
    import pytest
    import torch

    from rocm_rlhf.infra.config import ConfigError, validate_config
    from rocm_rlhf.sandbox.models import SandboxSizes, make_text_encoder, make_unet, make_vae, train_tokenizer
    from rocm_rlhf.pipeline.sandbox import _sizes

    assert _sizes(validate_config({})) == SandboxSizes()
    cfg = validate_config({"sandbox": {"models": {"text_width": 32, "text_layers": 1, "vae_channels": [8, 8, 16],
                                                  "unet_channels": [16, 32, 48], "unet_layers": 2,
                                                  "attention_head_dim": 16, "time_cond_proj_dim": 8}}})
    sizes = _sizes(cfg)
    tok = train_tokenizer(["a red circle on the left"], max_length=sizes.max_tokens)
    te = make_text_encoder(tok, sizes)
    assert te.config.hidden_size == 32 and te.config.num_hidden_layers == 1
    assert tuple(make_vae(sizes).config.block_out_channels) == (8, 8, 16)
    unet = make_unet(sizes, 8, sizes.text_width, lcm=True)
    assert tuple(unet.config.block_out_channels) == (16, 32, 48) and unet.config.layers_per_block == 2
    assert unet.config.time_cond_proj_dim == 8 and unet.config.cross_attention_dim == 32
    out = unet(torch.randn(1, 4, 8, 8), 10, encoder_hidden_states=torch.randn(1, 5, 32),
               timestep_cond=torch.randn(1, 8)).sample
    assert out.shape == (1, 4, 8, 8)

    with pytest.raises(ConfigError, match=r"sandbox.models.unet_channels.*\[40\] not a multiple of .* = 16"):
        validate_config({"sandbox": {"models": {"unet_channels": [32, 40], "attention_head_dim": 16}}})
    with pytest.raises(ConfigError, match="sandbox.models.text_width"):
        validate_config({"sandbox": {"models": {"text_width": 40}}})
    with pytest.raises(ConfigError, match="sandbox.models.vae_channels"):
        validate_config({"sandbox": {"models": {"vae_channels": [8, 16]}}})
