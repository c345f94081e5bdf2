"""The sandbox's tiny model builders: a tokenizer that is deterministic across processes and drops no character."""

from __future__ import annotations

import subprocess
import sys

CODE = (
    "import hashlib, json\n"
    "from rocm_rlhf.sandbox.models import train_tokenizer\n"
    "from rocm_rlhf.sandbox.world import all_captions\n"
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
