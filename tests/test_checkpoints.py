"""Checkpoints are bound to the settings that made them and are read as data, never as code; a damaged one is set
aside (moved, never deleted, and said in the job's log) and the run resumes from the newest usable one or from the
start. Each case ends where an uninterrupted run with the job's current settings ends (bit for bit on CPU)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import assert_same_adapter
from test_training import _train  # noqa: F401 -- the ROCM run of test_training (tiny LCM, redness reward)


def _run(tmp_path, name, model, **kw):
    kw.setdefault("steps", 4)
    kw.setdefault("beta", 0.1)
    return _train(tmp_path, name, model, **kw)


def _set_aside(run: Path) -> list[str]:
    folder = run / "checkpoints.set-aside"
    return sorted(p.name.split(".")[0] for p in folder.iterdir()) if folder.exists() else []


def _fix_checksum(ckpt: Path, name: str) -> None:
    """What someone who plants a file would do: make state.json's checksum agree with it."""
    import hashlib

    state = json.loads((ckpt / "state.json").read_text())
    if "sha256" in state:
        state["sha256"][name] = hashlib.sha256((ckpt / name).read_bytes()).hexdigest()
        (ckpt / "state.json").write_text(json.dumps(state))


def test_a_changed_learning_rate_starts_fresh_and_sets_the_old_checkpoint_aside(tmp_path, tiny_lcm_dir, capfd):
    """The old code resumed from the old lr's checkpoint: the adapter was the old run's while run.json said 0.03."""
    _run(tmp_path, "edited", tiny_lcm_dir, lr=0.02, max_steps=3)  # killed after step 3: checkpoint at step 2
    _run(tmp_path, "edited", tiny_lcm_dir, lr=0.03)
    out = capfd.readouterr().out
    _run(tmp_path, "fresh", tiny_lcm_dir, lr=0.03)
    assert_same_adapter(tmp_path / "edited", tmp_path / "fresh")
    pd.testing.assert_series_equal(pd.read_csv(tmp_path / "edited" / "log.csv")["loss"],
                                   pd.read_csv(tmp_path / "fresh" / "log.csv")["loss"])
    assert "set aside (stale: made under other training settings" in out
    assert _set_aside(tmp_path / "edited") == ["step_000002"]


def test_a_changed_lora_rank_starts_fresh_instead_of_crashing(tmp_path, tiny_lcm_dir):
    _run(tmp_path, "r", tiny_lcm_dir, max_steps=3)
    _run(tmp_path, "r", tiny_lcm_dir, lora={"rank": 8, "alpha": 8})  # the old code: size mismatch
    assert _set_aside(tmp_path / "r") == ["step_000002"]
    _run(tmp_path, "fresh", tiny_lcm_dir, lora={"rank": 8, "alpha": 8})
    assert_same_adapter(tmp_path / "r", tmp_path / "fresh")


def test_fewer_steps_resume_from_an_earlier_checkpoint_and_more_steps_extend_the_run(tmp_path, tiny_lcm_dir):
    _run(tmp_path, "s", tiny_lcm_dir, steps=6)  # checkpoints at 4 and 6
    _run(tmp_path, "s", tiny_lcm_dir, steps=4)  # step 6 is past the run: set aside, resumed from 4
    assert _set_aside(tmp_path / "s") == ["step_000006"]
    log = pd.read_csv(tmp_path / "s" / "log.csv")
    assert list(log["step"]) == [1, 2, 3, 4]  # the old code kept 6 rows
    _run(tmp_path, "four", tiny_lcm_dir, steps=4)
    assert_same_adapter(tmp_path / "s", tmp_path / "four")
    _run(tmp_path, "s", tiny_lcm_dir, steps=6)  # extended: resumes at 4 (no schedule depends on the total)
    _run(tmp_path, "six", tiny_lcm_dir, steps=6)
    assert_same_adapter(tmp_path / "s", tmp_path / "six")


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code from a checkpoint ran"))


def test_a_planted_pickle_in_a_checkpoint_never_runs(tmp_path, tiny_lcm_dir):
    _run(tmp_path, "p", tiny_lcm_dir, max_steps=3)
    ckpt = tmp_path / "p" / "checkpoints" / "step_000002"
    marker = tmp_path / "pwned"
    blob = torch.load(ckpt / "trainer.pt", weights_only=True)
    blob["extra"] = {"payload": _Payload(marker)}
    torch.save(blob, ckpt / "trainer.pt")
    _fix_checksum(ckpt, "trainer.pt")
    _run(tmp_path, "p", tiny_lcm_dir)  # the old code: torch.load(weights_only=False) ran the payload
    assert not marker.exists()
    assert _set_aside(tmp_path / "p") == ["step_000002"]
    _run(tmp_path, "fresh", tiny_lcm_dir)
    assert_same_adapter(tmp_path / "p", tmp_path / "fresh")


@pytest.mark.parametrize("damage", ["empty_log", "half_log", "bitflip_adapter", "truncated_trainer", "empty_state",
                                    "missing_adapter"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, tiny_lcm_dir, damage, capfd):
    _run(tmp_path, "full", tiny_lcm_dir, steps=6)
    _run(tmp_path, "d", tiny_lcm_dir, steps=6, max_steps=5)  # checkpoints at 2 and 4
    ckpt = tmp_path / "d" / "checkpoints" / "step_000004"
    if damage == "empty_log":
        (ckpt / "log.csv").write_text("")
        _fix_checksum(ckpt, "log.csv")  # even with a matching checksum the rows must match the step
    elif damage == "half_log":
        lines = (ckpt / "log.csv").read_text().splitlines()
        (ckpt / "log.csv").write_text("\n".join(lines[:3]) + "\n")
        _fix_checksum(ckpt, "log.csv")
    elif damage == "bitflip_adapter":
        raw = bytearray((ckpt / "adapter.safetensors").read_bytes())
        raw[-5] ^= 0x40
        (ckpt / "adapter.safetensors").write_bytes(bytes(raw))
    elif damage == "truncated_trainer":
        raw = (ckpt / "trainer.pt").read_bytes()
        (ckpt / "trainer.pt").write_bytes(raw[: len(raw) // 2])
    elif damage == "empty_state":
        (ckpt / "state.json").write_text("")
    else:
        os.remove(ckpt / "adapter.safetensors")
    _run(tmp_path, "d", tiny_lcm_dir, steps=6)
    out = capfd.readouterr().out
    assert f"checkpoint {ckpt} set aside (damaged" in out and "resumed from" in out and "step_000002" in out
    assert _set_aside(tmp_path / "d") == ["step_000004"]
    assert_same_adapter(tmp_path / "d", tmp_path / "full")
    la, lb = pd.read_csv(tmp_path / "full" / "log.csv"), pd.read_csv(tmp_path / "d" / "log.csv")
    assert list(lb["step"]) == list(range(1, 7))
    pd.testing.assert_series_equal(la["reward_mean"], lb["reward_mean"])


def test_a_full_disk_names_the_checkpoint_and_keeps_the_previous_one(tmp_path, tiny_lcm_dir, monkeypatch):
    import errno

    from rocm_rlhf.training import loop

    _run(tmp_path, "disk", tiny_lcm_dir, max_steps=3)
    real = torch.save

    def full(obj, f, *a, **k):
        if str(f).endswith("trainer.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(loop.torch, "save", full)
    with pytest.raises(loop.CheckpointError, match=r"could not write checkpoint .*step_000004.*disk full.*resumes "
                                                   r"from .*step_000002, which is intact"):
        _run(tmp_path, "disk", tiny_lcm_dir)
    names = sorted(p.name for p in (tmp_path / "disk" / "checkpoints").iterdir())
    assert names == ["step_000002"]  # no half-written folder left


def test_a_rebuilt_base_model_starts_fresh(tmp_path, tiny_lcm_dir):
    """Snakemake reruns training when the sandbox rebuilds its LCM at the same path: the old base's checkpoint must
    not be resumed (the model folder's files are part of the training digest)."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_lcm_dir, model)
    _run(tmp_path, "m", model, max_steps=3)
    weights = next((model / "unet").glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # "rebuilt"
    _run(tmp_path, "m", model)
    assert _set_aside(tmp_path / "m") == ["step_000002"]
