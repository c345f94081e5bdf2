"""The stage layer (rocm_rlhf.pipeline): each workflow script imports its stage by name, each rule's rerun digest
hashes the config keys its stage declares, and a stage is handed only those keys."""

import re
from pathlib import Path

import pytest

from rocm_rlhf import pipeline
from rocm_rlhf.infra.config import config_digest, validate_config
from rocm_rlhf.infra.jobs import UndeclaredConfigKey, declared_config, make_job, run_stage, stage, stage_reads

REPO = Path(__file__).resolve().parents[1]


def test_a_stage_sees_only_the_keys_it_declares():
    cfg = validate_config({})
    part = declared_config(cfg, ["seed", "sandbox.judge_tau", "train"], "demo")
    assert part["seed"] == cfg["seed"] and part["train"] == cfg["train"]
    assert part["sandbox"]["judge_tau"] == cfg["sandbox"]["judge_tau"]
    with pytest.raises(UndeclaredConfigKey, match="stage 'demo' reads config key 'sandbox.jitter'"):
        part["sandbox"]["jitter"]
    with pytest.raises(UndeclaredConfigKey, match="'model'"):
        part.get("model", {})  # no silent default for a key the config has
    assert part.get("no_such_key", 7) == 7
    part["train"]["lr"] = -1.0  # a copy: the stage cannot change the job's config
    assert cfg["train"]["lr"] != -1.0


def test_run_stage_hands_the_declared_config_and_names_an_undeclared_read():
    seen = {}

    @stage(reads=("seed",))
    def honest(job):
        seen["seed"] = job.config["seed"]

    @stage(reads=("seed",))
    def sloppy(job):
        return job.config["device"]

    job = make_job(config=validate_config({"seed": 5}))
    run_stage(job, honest)
    assert seen == {"seed": 5}
    with pytest.raises(UndeclaredConfigKey, match="stage 'sloppy' reads config key 'device'"):
        run_stage(job, sloppy)


def _rules():
    """(rule name, its script, the stage its digest names) for every rule of workflow/rules."""
    out = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"(?m)^rule ", smk.read_text())[1:]:
            name = block.split(":", 1)[0]
            script = re.search(r'"\.\./scripts/(\w+)\.py"', block)
            digest = re.search(r"stage_digest\(pipeline\.(\w+)\.(\w+)\)", block)
            out.append((name, script and script.group(1), digest and digest.groups()))
    return out


def test_every_script_imports_its_stage_by_name_and_its_rule_digests_that_stage():
    rules = _rules()
    assert len(rules) >= 19
    for name, script, digest in rules:
        if script is None:
            continue
        text = (REPO / "workflow" / "scripts" / f"{script}.py").read_text()
        m = re.search(r"^from rocm_rlhf\.pipeline\.(\w+) import (\w+)$", text, re.M)
        assert m, f"workflow/scripts/{script}.py does not import its stage from rocm_rlhf.pipeline"
        assert f"run_stage(snakemake, {m.group(2)})" in text
        module, fn = m.groups()
        assert getattr(getattr(pipeline, module), fn) is pipeline.STAGES[fn]
        if fn not in ("collect_scores", "publish_results"):  # read no config
            assert digest == (module, fn), f"rule {name}'s digest must be its stage's: stage_digest(pipeline.{module}.{fn})"
    plugins = REPO / "src" / "rocm_rlhf" / "infra" / "scorer_catalogue.py"  # imports users' module:Class scorers
    # the fork server imports, in its child, the module of the stage function the job's script imported by name
    # (fn.__module__, sent by run_stage) and its preload list
    forkserver = REPO / "src" / "rocm_rlhf" / "infra" / "forkserver.py"
    for path in [*(REPO / "src" / "rocm_rlhf" / "infra").glob("*.py"), *(REPO / "workflow").rglob("*.py")]:
        if path not in (plugins, forkserver):
            assert "import_module" not in path.read_text(), f"{path}: stages are imported by name"
    assert "rocm_rlhf.pipeline" not in plugins.read_text()  # the plug-in import never reaches a stage


def test_the_train_digest_covers_what_the_gold_reward_reads_and_a_baselines_own_block():
    cfg = validate_config({})
    rocm = type("W", (), {"run": "rocm-kl-b10-s0"})()
    dpok = type("W", (), {"run": "dpok-s0"})()
    train = pipeline.train.train
    assert "sandbox.judge_tau" in stage_reads(train, rocm)
    assert "baselines.dpok" in stage_reads(train, dpok) and "baselines.dpok" not in stage_reads(train, rocm)
    changed = validate_config({"sandbox": {"judge_tau": cfg["sandbox"]["judge_tau"] * 2}})
    assert config_digest(cfg, *stage_reads(train, rocm)) != config_digest(changed, *stage_reads(train, rocm))
