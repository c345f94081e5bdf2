"""rocm_rlhf.rewards.scorer_kwargs: each registered scorer class reads its own keyword arguments from the config (the
hub scorers their block rewards.<name>, the sandbox's proxies their folder, its gold judge the world's settings)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from rocm_rlhf.infra.config import validate_config
from rocm_rlhf.infra.scorer_catalogue import BUILTIN
from rocm_rlhf.rewards import Scorer, available, register, scorer_kwargs


@register("test_kwargs_plain")
class Plain(Scorer):
    def __init__(self, **_):
        super().__init__()


def by_prefix(config: dict, name: str, sandbox_rewards_dir: str | None = None) -> dict:
    """The rule the pipeline applied by name prefix before the scorer classes read their own arguments."""
    kw = dict(config["rewards"].get(name, {}))
    if name.startswith("proxy_") and "model_id" not in kw and sandbox_rewards_dir:
        kw["model_id"] = str(Path(sandbox_rewards_dir) / name)
    if name.startswith("gold"):
        sb = config["sandbox"]
        kw.setdefault("image_size", sb["image_size"])
        kw.setdefault("jitter", sb["jitter"])
        kw.setdefault("tau", sb["judge_tau"])
    return kw


CONFIGS = [
    {},
    {"sandbox": {"jitter": 2, "judge_tau": 0.01}},
    {"rewards": {"proxy_pick": {"model_id": "elsewhere/pick"}, "proxy_aesthetic": {"dtype": "float32"},
                 "gold": {"tau": 0.2}, "gold_realism": {"image_size": 64}, "pickscore": {"dtype": "bfloat16"},
                 "aesthetic": {"model_id": "a/b", "clip_model_id": "c/d"}, "test_kwargs_plain": {"x": 1}}},
]


@pytest.mark.parametrize("overlay", CONFIGS)
@pytest.mark.parametrize("rewards_dir", [None, "results/models/sandbox/rewards"])
def test_every_scorer_gets_the_keyword_arguments_of_the_name_rule(overlay, rewards_dir):
    config = validate_config(overlay)
    assert set(BUILTIN) <= set(available())
    for name in available():
        assert scorer_kwargs(name, config, rewards_dir) == by_prefix(config, name, rewards_dir), name
    # a name nobody registered (load_scorer refuses it) gets its block as it is
    assert scorer_kwargs("proxy_unregistered", config, rewards_dir) == {}


def test_what_each_kind_of_scorer_reads():
    config = validate_config({"rewards": {"pickscore": {"dtype": "bfloat16"}, "gold": {"tau": 0.2}}})
    sbx = "results/models/sandbox/rewards"
    assert scorer_kwargs("pickscore", config, sbx) == {"dtype": "bfloat16"}
    assert scorer_kwargs("clipscore", config, sbx) == {}
    assert scorer_kwargs("proxy_pick", config, sbx) == {"model_id": str(Path(sbx) / "proxy_pick")}
    assert scorer_kwargs("proxy_aesthetic", config) == {}  # no sandbox build given: nothing to fill in
    assert scorer_kwargs("gold", config) == {"tau": 0.2, "image_size": 32, "jitter": 1}
    assert scorer_kwargs("gold_fidelity", config) == {"image_size": 32, "jitter": 1, "tau": 0.005}
    assert scorer_kwargs("test_kwargs_plain", config) == {}
    out = scorer_kwargs("pickscore", config)
    out["dtype"] = "float16"  # a fresh dict: the config is left alone
    assert config["rewards"]["pickscore"] == {"dtype": "bfloat16"}


def test_the_stages_hash_exactly_the_sandbox_keys_the_gold_judge_reads():
    """pipeline.common.SANDBOX_JUDGE_KEYS (hashed into the train and evaluate rules' rerun digests) names the sandbox
    keys whose change changes the gold judge's arguments, and no other sandbox key does."""
    from rocm_rlhf.infra.config import validate_config
    from rocm_rlhf.pipeline.common import SANDBOX_JUDGE_KEYS
    from rocm_rlhf.rewards import scorer_kwargs

    base = validate_config({})
    changed = {"image_size": 64, "jitter": 3, "judge_tau": 0.5, "quality_prompts": 7}
    reads = set()
    for key, value in changed.items():
        other = copy.deepcopy(base)  # set directly: the schema allows one image size only
        other["sandbox"][key] = value
        if scorer_kwargs("gold", other) != scorer_kwargs("gold", base):
            reads.add(f"sandbox.{key}")
    assert reads == set(SANDBOX_JUDGE_KEYS)
