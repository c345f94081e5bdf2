"""The config schema: defaults filled in, bad values rejected with the key named, before any job runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from rocm_rlhf.infra.config import ConfigError, load_config, validate_config

DEFAULT = REPO / "config" / "config.yaml"


def test_defaults_are_filled():
    cfg = validate_config({})
    assert cfg["setting"] == "sandbox"
    assert cfg["train"]["lora"] == {"rank": 16, "alpha": 32, "target_modules": ["to_q", "to_k", "to_v", "to_out.0"]}
    assert cfg["rocm"]["reduction"] == "mean"


@pytest.mark.parametrize(
    "override, key, words",
    [
        ({"train": {"steps": "many"}}, "train.steps", "not of type 'integer'"),  # wrong type
        ({"train": {"stepz": 3}}, "train", "'stepz' was unexpected"),  # unknown key
        ({"model": {"guidance_scale": 0.5}}, "model.guidance_scale", "less than the minimum"),  # out of range
        ({"rocm": {"divergences": ["kl", "tv"]}}, "rocm.divergences.1", "'tv' is not one of"),
        ({"train": {"lr": 0}}, "train.lr", "less than or equal to the minimum"),
    ],
)
def test_schema_rejects_with_key_named(override, key, words):
    with pytest.raises(ConfigError) as err:
        load_config(DEFAULT, overrides=override)
    msg = str(err.value)
    assert f"config key '{key}'" in msg and words in msg


def test_semantic_rules():
    with pytest.raises(ConfigError, match="no beta grid for divergence 'js'"):
        validate_config({"rocm": {"divergences": ["js"], "betas": {"kl": [0.1]}}})
    with pytest.raises(ConfigError, match="model.lcm"):
        validate_config({"setting": "hub"})


def test_ci_overlay_merges():
    cfg = load_config(DEFAULT, REPO / "config" / "ci.yaml")
    assert cfg["rocm"]["divergences"] == ["kl"] and cfg["train"]["steps"] == 4
    assert cfg["train"]["lora"]["rank"] == 16  # untouched keys keep the default config's values


def test_snakemake_refuses_bad_config_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"batch_size": -4}}))
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(DEFAULT),
                          str(bad), "-d", str(tmp_path / "wd")], cwd=REPO, capture_output=True, text=True)
    assert res.returncode != 0
    assert "config key 'train.batch_size'" in res.stdout + res.stderr
    assert not (tmp_path / "wd" / "results").exists()


def _leaf_keys(node, prefix=""):
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        if "properties" in sub:
            yield from _leaf_keys(sub, path)
        else:
            yield path


def test_config_readme_documents_every_key():
    from rocm_rlhf.infra.config import load_schema

    text = (REPO / "config" / "README.md").read_text()
    missing = []
    for path in _leaf_keys(load_schema(REPO / "workflow/schemas/config.schema.yaml")):
        parent, _, leaf = path.rpartition(".")
        # a key is documented by its full path, or (for per-method blocks) by its block's row listing the leaf
        if f"`{path}`" not in text and not (f"`{parent}.*`" in text and f"`{leaf}`" in text):
            missing.append(path)
    assert not missing, f"config/README.md does not document: {missing}"


def test_config_digest_sees_content_keys_and_ignores_operational_ones():
    import copy

    import pytest

    from rocm_rlhf.infra.config import config_digest

    base = validate_config({})
    d = config_digest(base, "train", "model.num_steps")
    same = copy.deepcopy(base)
    same["train"].update(threads=4, num_processes=2, checkpoint_every=7, log_every=3)
    same["device"] = "cpu"
    assert config_digest(same, "train", "model.num_steps") == d
    for path, value in (("train.lr", 0.01), ("train.lora.rank", 8), ("model.num_steps", 8)):
        other = copy.deepcopy(base)
        section, *rest = path.split(".")
        node = other[section]
        for part in rest[:-1]:
            node = node[part]
        node[rest[-1]] = value
        assert config_digest(other, "train", "model.num_steps") != d, path
    assert config_digest(base, "model.num_steps", "train") == d  # order of the keys does not matter
    with pytest.raises(KeyError, match="no config key 'train.nope'"):
        config_digest(base, "train.nope")
    # a key added later (train.surrogate) at its neutral value leaves the digest of the train block as it was before
    # the key existed (finished runs do not rerun); any other value changes it
    before = copy.deepcopy(base)
    del before["train"]["surrogate"]
    assert config_digest(before, "train") == config_digest(base, "train")
    other = copy.deepcopy(base)
    other["train"]["surrogate"] = "proxy_aesthetic"
    assert config_digest(other, "train") != config_digest(base, "train")
    # a stage may read the key itself (the score-function table reads train.surrogate)
    assert config_digest(base, "seed", "train.surrogate") == config_digest(before, "seed")
    assert config_digest(other, "seed", "train.surrogate") != config_digest(base, "seed", "train.surrogate")


@pytest.mark.parametrize("override, key, words", [
    ({"train": {"steps": 4.0}}, "train.steps", "4.0 is not a whole number: write 4"),
    ({"train": {"lr": float("nan")}}, "train.lr", "nan is not a finite number"),
    ({"rocm": {"betas": {"kl": [float("inf")]}}}, "rocm.betas.kl.0", "inf is not a finite number"),
    ({"train": {"lr": "1e-1"}}, "train.lr", "YAML reads 1e-1 as text"),
    ({"rocm": {"seeds": [0, 0]}}, "rocm.seeds", "non-unique"),
    ({"baselines": {"seeds": [1, 1]}}, "baselines.seeds", "non-unique"),
    ({"rocm": {"divergences": []}}, "rocm.divergences", "should be non-empty"),
    ({"evaluation": {"metrics": []}}, "evaluation.metrics", "should be non-empty"),
    ({"train": {"reward": "gold"}}, "train.reward", "is not differentiable"),
    ({"train": {"reward": "pickscor"}}, "train.reward", "unknown scorer 'pickscor'"),
    ({"evaluation": {"metrics": ["gold", "hpsv3"]}}, "evaluation.metrics[1]", "unknown scorer 'hpsv3'"),
    ({"figures": {"quality_metric": "golden"}}, "figures.quality_metric", "unknown scorer 'golden'"),
    ({"figures": {"quality_metric": "gold_fidelity"}, "evaluation": {"metrics": ["proxy_pick", "gold"]}},
     "figures.quality_metric", "evaluation.metrics does not score it"),
    ({"train": {"lora": {"target_modules": ["to_q", "to_kk"]}}}, "train.lora.target_modules", "['to_kk'] name no"),
    ({"model": {"lcm": "SimianLuo/LCM_Dreamshaper_v7"}}, "model.lcm", "the sandbox setting trains and uses its own"),
])
def test_gaps_that_passed_validation_before_are_errors_naming_the_key(override, key, words):
    """Each of these passed `rocm-rlhf validate` and `snakemake -n` before and failed at job time or not at all."""
    with pytest.raises(ConfigError) as err:
        load_config(DEFAULT, overrides=override)
    msg = str(err.value)
    assert f"config key '{key}'" in msg and words in msg, msg


def test_sandbox_scorers_in_the_hub_setting_are_refused():
    with pytest.raises(ConfigError, match="'evaluation.metrics\\[0\\]': scorer 'gold' belongs to the sandbox"):
        load_config(REPO / "config" / "paper.yaml", overrides={"evaluation": {"metrics": ["gold", "pickscore"]}})


def test_scorer_catalogue_matches_the_registry():
    """The torch-free catalogue the validation reads names every registered built-in scorer with its flag."""
    from rocm_rlhf import rewards
    from rocm_rlhf.infra.scorer_catalogue import BUILTIN

    rewards.available()
    builtin = {n: f for n, f in rewards._REGISTRY.items() if f.__module__.startswith("rocm_rlhf.")}
    assert set(builtin) == set(BUILTIN)
    assert {n: f.differentiable for n, f in builtin.items()} == {n: d for n, (d, _) in BUILTIN.items()}


def test_scorer_options_are_checked_before_loading():
    from rocm_rlhf.rewards import load_scorer

    with pytest.raises(ValueError, match="scorer 'gold' does not take the options \\['colour'\\].*takes: image_size"):
        load_scorer("gold", colour="red")


def test_lora_targets_name_real_unet_layers(tiny_lcm_dir):
    """Every name the validation accepts adapts some layer of a diffusers UNet; an unmatched one is an error."""
    from rocm_rlhf.infra.config import UNET_LORA_TARGETS
    from rocm_rlhf.models import load_lcm_pipeline
    from rocm_rlhf.training.lora import add_lora

    unet = load_lcm_pipeline(tiny_lcm_dir).unet
    names = [n for n, _ in unet.named_modules()]
    for t in UNET_LORA_TARGETS:
        assert any(n == t or n.endswith("." + t) for n in names), t
    with pytest.raises(ValueError, match="\\['to_kk'\\] match no layer"):
        add_lora(unet, 4, 4, ["to_q", "to_kk"])


@pytest.mark.parametrize("content, words", [
    (None, "does not exist"),
    ("train:\n  lr: [0.1\n", "is not valid YAML at line"),
    ("- a\n- b\n", "must hold a mapping of keys"),
    (b"train:\n  reward: \xff\xfe\n", "cannot be read"),
])
def test_validate_names_the_file_without_a_traceback(tmp_path, content, words):
    """`rocm-rlhf validate` printed tracebacks for these; now one line naming the file, exit status 2."""
    path = tmp_path / "bad.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "rocm_rlhf.infra.cli", "validate", str(path)], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert str(path) in proc.stderr and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_output_folders_by_name_and_unnamed_configs_protect_the_default():
    from rocm_rlhf.infra.config import check_output_name, output_dirs

    default = load_config(DEFAULT)
    assert output_dirs(default) == {"results": "results", "figures": "paper_figures", "logs": "logs"}
    check_output_name(default, DEFAULT)  # the default config itself writes the committed folders
    ci = load_config(DEFAULT, REPO / "config" / "ci.yaml")
    assert output_dirs(ci) == {"results": "results/ci", "figures": "paper_figures/ci", "logs": "logs/ci"}
    for name in ("paper.yaml", "paper-tiny.yaml", "replication.yaml"):  # every shipped config but the default
        files = [REPO / "config" / "paper.yaml"] if name.startswith("paper") else [DEFAULT]
        cfg = load_config(*dict.fromkeys([*files, REPO / "config" / name]))
        assert cfg["name"] == name.removesuffix(".yaml")
    assert output_dirs(load_config(DEFAULT, REPO / "config" / "replication.yaml"))["figures"] == \
        "paper_figures/replication"  # where its committed Table 1 and choice are
    unnamed = load_config(DEFAULT, overrides={"confirm": {"seeds": []}})  # the one-seed design, without a name
    with pytest.raises(ConfigError, match=r"differs from the default config .* in confirm.seeds, but .*name: my-run"):
        check_output_name(unnamed, DEFAULT)
    # operational keys change no result: the default config on 4 threads and another device keeps its folders
    check_output_name(load_config(DEFAULT, overrides={"device": "cpu", "train": {"threads": 4}}), DEFAULT)
    with pytest.raises(ConfigError, match="config key 'name': 'runs' is reserved"):
        load_config(DEFAULT, overrides={"name": "runs"})
    with pytest.raises(ConfigError, match="config key 'name'"):
        load_config(DEFAULT, overrides={"name": "../elsewhere"})
