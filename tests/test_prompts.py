"""Prompt sets: sandbox splits with held-out pairs, the Pick-a-Pic loader, CSV round trips."""

import re

import pandas as pd
import pytest
import torch

torch.set_num_threads(1)

from rocm_rlhf.infra.hub import ModelNotAvailableError  # noqa: E402
from rocm_rlhf.prompts import (  # noqa: E402
    DEFAULT_HELDOUT_PAIRS,
    SANDBOX_COLUMNS,
    VAL_PREFIX,
    pickapic_prompts,
    pickapic_val_prompts,
    read_prompts,
    sandbox_prompts,
    sandbox_splits,
    write_prompts,
)
from rocm_rlhf.sandbox.captions import all_captions, parse_caption  # noqa: E402
from rocm_rlhf.sandbox.render import World  # noqa: E402


@pytest.fixture(scope="module")
def world():
    return World()


# ------------------------------------------------------------------------------------------------------- sandbox
def test_sandbox_splits_hold_out_pairs(world):
    train, evl = sandbox_prompts(world, n_train=300, n_eval=100, heldout_pairs=DEFAULT_HELDOUT_PAIRS, seed=0)
    assert list(train.columns) == list(SANDBOX_COLUMNS) == list(evl.columns)
    assert len(train) == 300 and len(evl) == 100
    assert set(train["split"]) == {"train"} and set(evl["split"]) == {"eval"}
    held = set(DEFAULT_HELDOUT_PAIRS)
    assert not any((c, s) in held for c, s in zip(train["color"], train["shape"]))
    assert not train["heldout"].any()
    assert evl["heldout"].sum() == 50
    assert {(c, s) for c, s, h in zip(evl["color"], evl["shape"], evl["heldout"]) if h} == held
    assert all(((c, s) in held) == h for c, s, h in zip(evl["color"], evl["shape"], evl["heldout"]))
    # disjoint, deduplicated, ids stable (index in the grammar) and attributes as the caption says
    assert not set(train["prompt"]) & set(evl["prompt"])
    both = pd.concat([train, evl])
    assert both["prompt"].is_unique and both["prompt_id"].is_unique
    captions = all_captions()
    for row in both.itertuples():
        assert captions[int(row.prompt_id[4:])].text == row.prompt
        parsed = parse_caption(row.prompt)
        assert (row.shape, row.color, row.size, row.position) == tuple(
            parsed.get(k, "") for k in ("shape", "color", "size", "position")
        )


def test_sandbox_prompts_are_deterministic_for_the_seed(world):
    a = sandbox_prompts(world, 50, 20, seed=1)
    b = sandbox_prompts(world, 50, 20, seed=1)
    c = sandbox_prompts(world, 50, 20, seed=2)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    assert set(a[0]["prompt"]) != set(c[0]["prompt"])


def test_sandbox_custom_pairs_and_limits(world):
    pairs = [("red", "square")]
    n_held = sum((c.color, c.shape) == ("red", "square") for c in all_captions())
    n_in = len(all_captions()) - n_held
    train, evl = sandbox_prompts(world, n_train=n_in - 10, n_eval=20, heldout_pairs=pairs, seed=0)
    assert len(train) == n_in - 10 and not ((train["color"] == "red") & (train["shape"] == "square")).any()
    assert evl["heldout"].sum() == 10 and set(evl.loc[evl["heldout"], "prompt"]) <= {
        c.text for c in all_captions() if (c.color, c.shape) == ("red", "square")
    }
    with pytest.raises(ValueError, match=f"{n_in} in-distribution captions"):
        sandbox_prompts(world, n_train=n_in - 9, n_eval=20, heldout_pairs=pairs)
    with pytest.raises(ValueError, match=f"{n_held} captions of the held-out pairs"):
        sandbox_prompts(world, n_train=10, n_eval=2 * n_held + 2, heldout_pairs=pairs)
    with pytest.raises(ValueError, match="held-out pair"):
        sandbox_prompts(world, 10, 10, heldout_pairs=[("purple", "circle")])
    train, evl = sandbox_prompts(world, 10, 10, heldout_pairs=[])
    assert not evl["heldout"].any() and len(evl) == 10


# ------------------------------------------------------------------------------------------- the validation split
def test_sandbox_validation_split_is_disjoint_and_holds_out_pairs(world):
    splits = sandbox_splits(world, n_train=240, n_eval=24, n_val=16, heldout_pairs=DEFAULT_HELDOUT_PAIRS, seed=0)
    train, evl, val = splits["train"], splits["eval"], splits["val"]
    assert list(val.columns) == list(SANDBOX_COLUMNS) and len(val) == 16 and set(val["split"]) == {"val"}
    # no caption in two splits; ids distinct and prefixed, the caption's index after the prefix
    for a, b in ((train, evl), (train, val), (evl, val)):
        assert not set(a["prompt"]) & set(b["prompt"]) and not set(a["prompt_id"]) & set(b["prompt_id"])
    assert val["prompt"].is_unique and val["prompt_id"].is_unique
    assert val["prompt_id"].str.startswith(VAL_PREFIX + "sbx-").all()
    assert not evl["prompt_id"].str.startswith(VAL_PREFIX).any() and not train["prompt_id"].str.startswith("val").any()
    captions = all_captions()
    assert all(captions[int(pid.removeprefix(VAL_PREFIX)[4:])].text == p for pid, p in zip(val.prompt_id, val.prompt))
    # drawn as the eval prompts: half from the held-out pairs, both pairs present, never in train
    held = set(DEFAULT_HELDOUT_PAIRS)
    assert val["heldout"].sum() == 8 and evl["heldout"].sum() == 12
    assert {(c, s) for c, s, h in zip(val["color"], val["shape"], val["heldout"]) if h} == held
    assert all(((c, s) in held) == h for c, s, h in zip(val["color"], val["shape"], val["heldout"]))


def test_the_validation_split_leaves_train_and_eval_unchanged_and_is_deterministic(world):
    base = sandbox_prompts(world, 240, 24, seed=0)
    for n_val in (1, 16, 100):
        splits = sandbox_splits(world, 240, 24, n_val, seed=0)
        pd.testing.assert_frame_equal(splits["train"], base[0])
        pd.testing.assert_frame_equal(splits["eval"], base[1])
        assert len(splits["val"]) == n_val
    a, b = sandbox_splits(world, 50, 20, 10, seed=3), sandbox_splits(world, 50, 20, 10, seed=3)
    pd.testing.assert_frame_equal(a["val"], b["val"])
    assert set(sandbox_splits(world, 50, 20, 10, seed=4)["val"]["prompt"]) != set(a["val"]["prompt"])
    # a larger validation split extends a smaller one's draw (the same generator, drawn last)
    small, large = sandbox_splits(world, 240, 24, 8, seed=0)["val"], sandbox_splits(world, 240, 24, 16, seed=0)["val"]
    assert set(small["prompt"]) <= set(large["prompt"])


def test_the_validation_split_has_its_own_noise(world):
    """The per-image noise is seeded by (prompt id, sample seed) alone (rocm_rlhf.evaluation.unit_seed): the val ids
    differ from every eval id, so no validation image shares its noise with a test image."""
    from rocm_rlhf.evaluation import eval_units, unit_seed

    splits = sandbox_splits(world, 240, 24, 16, seed=0)
    seeds = {name: {unit_seed(u.prompt_id, u.sample_seed) for u in eval_units(splits[name], 4).itertuples()}
             for name in ("eval", "val")}
    assert len(seeds["eval"]) == 24 * 4 and len(seeds["val"]) == 16 * 4 and not seeds["eval"] & seeds["val"]


def test_sandbox_validation_split_limits(world):
    pairs = [("red", "square")]
    n_held = sum((c.color, c.shape) == ("red", "square") for c in all_captions())
    n_in = len(all_captions()) - n_held
    with pytest.raises(ValueError, match=f"{n_in} in-distribution captions.*n_val"):
        sandbox_splits(world, n_train=n_in - 20, n_eval=20, n_val=22, heldout_pairs=pairs)
    with pytest.raises(ValueError, match=f"{n_held} captions of the held-out pairs.*n_val"):
        sandbox_splits(world, n_train=10, n_eval=n_held, n_val=n_held + 2, heldout_pairs=pairs)
    with pytest.raises(ValueError, match="n_val must be a non-negative integer"):
        sandbox_splits(world, 10, 10, -1)
    val = sandbox_splits(world, 10, 10, 6, heldout_pairs=[])["val"]
    assert not val["heldout"].any() and len(val) == 6


# sha256 of results/prompts/{train,eval}.csv of config/config.yaml as written before the validation split existed
# (the prepare_prompts stage of commit d773a15): adding the split must not change them
DEFAULT_PROMPT_FILES = {"train": "26a1471311ff4a229ec36a5038c8a634c686a9f593aad5271be603addba3494d",
                        "eval": "f327ff7a449a98064f51a45e0e64864389718e3eca9324de68bf041b8f6a00a2"}


@pytest.mark.parametrize("n_val", [None, 1, 40])
def test_prepare_prompts_writes_val_and_keeps_the_default_train_and_eval_files(tmp_path, n_val):
    import hashlib

    from conftest import REPO
    from rocm_rlhf.infra.config import load_config
    from rocm_rlhf.infra.jobs import make_job, run_stage
    from rocm_rlhf.pipeline.prompts import prepare_prompts

    cfg = load_config(REPO / "config/config.yaml", overrides={"prompts": {"n_val": n_val}} if n_val else None)
    out = {name: str(tmp_path / f"{name}.csv") for name in ("train", "eval", "val")}
    run_stage(make_job(output=out, config=cfg), prepare_prompts)
    for name, digest in DEFAULT_PROMPT_FILES.items():
        assert hashlib.sha256((tmp_path / f"{name}.csv").read_bytes()).hexdigest() == digest, name
    val, evl = read_prompts(out["val"]), read_prompts(out["eval"])
    assert len(val) == (n_val or cfg["prompts"]["n_val"]) == (n_val or 16)
    assert set(val["split"]) == {"val"} and not set(val["prompt"]) & set(evl["prompt"])


def test_write_read_round_trip(world, tmp_path):
    train, evl = sandbox_prompts(world, 40, 20, seed=3)
    path = tmp_path / "sub" / "eval.csv"
    write_prompts(evl, path)
    back = read_prompts(path)
    pd.testing.assert_frame_equal(back, evl.reset_index(drop=True), check_dtype=False)
    assert back["heldout"].dtype == bool and back["template_id"].dtype == "int64"
    assert (evl["size"] == "").any() and (evl["position"] == "").any()  # "" must come back as "", not NaN
    assert [p.name for p in path.parent.iterdir()] == ["eval.csv"]  # no temporary file left
    odd = pd.DataFrame({"prompt_id": ["pap-00000", "pap-00001"], "prompt": ["NA", 'a "quoted", comma\nline']})
    write_prompts(odd, tmp_path / "odd.csv")
    pd.testing.assert_frame_equal(read_prompts(tmp_path / "odd.csv"), odd, check_dtype=False)
    with pytest.raises(ValueError, match="unique"):
        write_prompts(pd.concat([odd, odd]), tmp_path / "dup.csv")
    with pytest.raises(FileNotFoundError):
        read_prompts(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------------------------------- Pick-a-Pic
LONG = "a " + "very " * 60 + "long caption"  # 312 characters
RAW_CAPTIONS = [
    "A cat wearing a hat",
    "a  cat wearing a HAT ",  # duplicate (case, whitespace)
    "",  # empty
    "   ",  # blank
    "two words",  # too short
    None,  # not a string
    LONG,  # too long
    "x" * 290 + " y z",  # 294 characters: kept
    "an astronaut riding a horse\non the moon",  # newline collapsed
    "An astronaut riding a horse on the moon",  # duplicate after normalisation
    "a watercolor painting of a fox",
    "NA is not missing here",
    "a watercolor painting of a fox",  # exact duplicate
    "cyberpunk city at night, neon lights",
    "portrait of an old sailor, oil painting",
]
EXPECTED_POOL = [
    "A cat wearing a hat",
    "x" * 290 + " y z",
    "an astronaut riding a horse on the moon",
    "a watercolor painting of a fox",
    "NA is not missing here",
    "cyberpunk city at night, neon lights",
    "portrait of an old sailor, oil painting",
]


def _pickapic_frame():
    n = len(RAW_CAPTIONS)
    return pd.DataFrame(
        {
            "are_different": [True] * n,
            "best_image_uid": [f"uid-{i}" for i in range(n)],
            "caption": RAW_CAPTIONS,
            "created_at": pd.Timestamp("2023-05-01") + pd.to_timedelta(range(n), unit="min"),
            "has_label": [True] * n,
            "image_0_uid": [f"a{i}" for i in range(n)],
            "image_0_url": [f"https://example.org/a{i}.png" for i in range(n)],
            "image_1_uid": [f"b{i}" for i in range(n)],
            "image_1_url": [f"https://example.org/b{i}.png" for i in range(n)],
            "jpg_0": [bytes([255, 216, i]) for i in range(n)],
            "jpg_1": [bytes([255, 216, 100 + i]) for i in range(n)],
            "label_0": [1.0, 0.0, 0.5] * (n // 3) + [1.0] * (n % 3),
            "label_1": [0.0, 1.0, 0.5] * (n // 3) + [0.0] * (n % 3),
            "model_0": ["sdxl"] * n,
            "model_1": ["sd-2.1"] * n,
            "ranking_id": list(range(n)),
            "user_id": [7] * n,
            "num_example_per_prompt": [1] * n,
        }
    )


@pytest.fixture(scope="module")
def pickapic_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pickapic")
    df = _pickapic_frame()
    df.to_parquet(d / "train.parquet", index=False)
    df[["caption", "best_image_uid", "ranking_id"]].to_csv(d / "train.csv", index=False)
    return d


@pytest.mark.parametrize("name", ["train.parquet", "train.csv"])
def test_pickapic_loader_cleans_dedups_and_samples(pickapic_files, tmp_path, name):
    path = pickapic_files / name
    kw = dict(cache_dir=tmp_path / "cache")
    full = pickapic_prompts(str(path), n=len(EXPECTED_POOL), seed=0, **kw)
    assert list(full.columns) == ["prompt_id", "prompt", "split"] and set(full["split"]) == {"train"}
    assert sorted(full["prompt"]) == sorted(EXPECTED_POOL)
    # ids are indices in the cleaned pool, whatever the draw
    assert dict(zip(full["prompt_id"], full["prompt"])) == {f"pap-{i:05d}": p for i, p in enumerate(EXPECTED_POOL)}
    a = pickapic_prompts(path, n=4, seed=5, **kw)
    b = pickapic_prompts(path, n=4, seed=5, **kw)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 4 and a["prompt"].is_unique and set(a["prompt"]) <= set(EXPECTED_POOL)
    draws = {tuple(pickapic_prompts(path, n=4, seed=s, **kw)["prompt"]) for s in range(6)}
    assert len(draws) > 1
    with pytest.raises(ValueError, match=r"only 7 captions remain .* fewer than n=8"):
        pickapic_prompts(path, n=8, seed=0, **kw)
    short = pickapic_prompts(path, n=8, seed=0, min_words=2, **kw)  # "two words" now passes
    assert "two words" in set(short["prompt"])
    assert LONG in set(pickapic_prompts(path, n=9, seed=0, min_words=2, max_chars=400, **kw)["prompt"])


def test_pickapic_local_dataset_folder_keeps_its_splits(tmp_path):
    """A folder in the hub dataset's layout (data/<split>-00000-of-00001.parquet, as rocm_rlhf.infra.tiny_hub writes
    Pick-a-Pic v1's) is read split by split, as the hub id would be."""
    from rocm_rlhf.infra.tiny_hub import write_pickapic

    folder = write_pickapic(tmp_path / "pickapic", splits={"train": 30, "validation_unique": 8})
    kw = dict(cache_dir=tmp_path / "cache")
    train = pickapic_prompts(folder, n=10, seed=0, split="train", **kw)
    evals = pickapic_prompts(folder, n=5, seed=0, split="validation_unique", **kw)
    assert set(train["split"]) == {"train"} and set(evals["split"]) == {"validation_unique"}
    assert not set(train["prompt"]) & set(evals["prompt"])
    with pytest.raises(ValueError, match="validation"):
        pickapic_prompts(folder, n=1, seed=0, split="validation", **kw)


def test_pickapic_validation_prompts_are_drawn_apart_from_eval(tmp_path):
    """From the eval split (disjoint from the eval draw, which stays as it was) or from a split of their own; never a
    train or eval caption; their own ids, stream and split label."""
    from rocm_rlhf.infra.tiny_hub import write_pickapic

    folder = write_pickapic(tmp_path / "pickapic", splits={"train": 30, "validation_unique": 16, "test_unique": 16})
    kw = dict(cache_dir=tmp_path / "cache")
    train = pickapic_prompts(folder, n=10, seed=0, split="train", **kw)
    evals = pickapic_prompts(folder, n=5, seed=0, split="test_unique", **kw)
    taken = [*train["prompt"], *evals["prompt"]]
    same = pickapic_val_prompts(folder, 8, 0, "test_unique", exclude=taken, **kw)  # from the eval split
    own = pickapic_val_prompts(folder, 8, 0, "validation_unique", exclude=taken, **kw)  # a split of their own
    for val in (same, own):
        assert len(val) == 8 and set(val["split"]) == {"val"} and val["prompt"].is_unique
        assert not set(val["prompt"]) & set(taken)
        assert val["prompt_id"].str.startswith(VAL_PREFIX + "pap-").all()
        assert not set(val["prompt_id"]) & set(evals["prompt_id"])
    # the eval pool: ids are indices in the cleaned pool, exclusions included, so the two draws share no id
    full = pickapic_prompts(folder, n=15, seed=0, split="test_unique", **kw)  # 16 rows, one one-word caption dropped
    pool = dict(zip(full["prompt_id"], full["prompt"]))
    assert all(pool[pid.removeprefix(VAL_PREFIX)] == p for pid, p in zip(same["prompt_id"], same["prompt"]))
    pd.testing.assert_frame_equal(same, pickapic_val_prompts(folder, 8, 0, "test_unique", exclude=taken, **kw))
    with pytest.raises(ValueError, match=r"10 of them not excluded .* fewer than n=11"):
        pickapic_val_prompts(folder, 11, 0, "test_unique", exclude=taken, **kw)
    # without exclusions the draw is the one pickapic_prompts always made
    assert list(pickapic_prompts(folder, n=5, seed=0, split="test_unique", exclude=(), **kw)["prompt"]) == list(
        evals["prompt"])


def test_pickapic_local_file_errors(tmp_path):
    pd.DataFrame({"text": ["a b c"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="caption"):
        pickapic_prompts(tmp_path / "bad.parquet", n=1, seed=0, cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError):
        pickapic_prompts(tmp_path / "nothing.parquet", n=1, seed=0)


def test_pickapic_hub_id_offline_raises_model_not_available(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    # both libraries read HF_HUB_OFFLINE at import time
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelNotAvailableError, match="yuvalkirstain/pickapic_v1.*offline.*HF_HUB_OFFLINE=1") as err:
        pickapic_prompts("yuvalkirstain/pickapic_v1", n=10, seed=0, cache_dir=tmp_path / "hf" / "datasets")
    assert "pickapic_v1_no_images" in str(err.value) and "load_dataset" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"caption\n", b"caption,n\n\"an unterminated quote,1\n",
                                     b"caption\n\xff\xfe not utf-8 \xff\n"])
def test_pickapic_damaged_csv_is_one_error_naming_the_file(tmp_path, content):
    """Empty, header-only, an unterminated quote, not UTF-8: each was a library error that named no file."""
    path = tmp_path / "captions.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        pickapic_prompts(path, n=1, seed=0, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("content, words", [
    ("", "cannot be read as a prompt table"),
    ("prompt_id,prompt\n", "has no rows"),
    ("prompt_id,prompt\np1,a red circle\np1,a blue square\n", "prompt_id 'p1' appears more than once"),
    ("prompt_id,prompt\np1,a red circle\np2,  \n", "prompt 'p2' is empty"),
    ('prompt_id,prompt\np1,"a red circle\n', "cannot be read as a prompt table"),
])
def test_read_prompts_refuses_damaged_tables_naming_the_file(tmp_path, content, words):
    path = tmp_path / "prompts.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + re.escape(words)):
        read_prompts(path)
    (tmp_path / "latin1.csv").write_bytes("prompt_id,prompt\np1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.csv: cannot be read"):
        read_prompts(tmp_path / "latin1.csv")
