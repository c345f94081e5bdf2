"""The paper's setting without a GPU or network: its dry run, its staging list, and the offline error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO
from rocm_rlhf.infra.config import load_config
from rocm_rlhf.infra.hub import ModelNotAvailableError
from test_workflow import dry_run

PAPER = REPO / "config" / "paper.yaml"


def test_a_command_line_config_replaces_the_default_instead_of_merging_onto_it(tmp_path):
    """From the repository root, where config/config.yaml exists, `--configfile config/paper.yaml` used to be merged
    onto the sandbox config: the paper's runs got the sandbox's baseline batches, steps and learning rates and its
    confirmatory seeds. The same command must plan the same jobs with and without config/config.yaml beside it."""
    import shutil

    root_like = tmp_path / "root"
    shutil.copytree(REPO / "config", root_like / "config")
    args = ("--snakefile", str(REPO / "Snakefile"), "--configfile", str(PAPER), str(PAPER.with_name("paper-tiny.yaml")))
    beside_default = dry_run("--directory", str(root_like), *args)
    alone = dry_run("--directory", str(tmp_path / "alone"), *args)
    assert beside_default == alone
    assert beside_default["train_baseline"] == 4  # the paper's one seed, not the sandbox's confirmatory seeds


def test_dry_run_counts_jobs_without_network(tmp_path):
    counts = dry_run("--directory", str(tmp_path), "--snakefile", str(REPO / "Snakefile"), "--configfile", str(PAPER))
    cfg = load_config(PAPER)
    seeds = len(cfg["rocm"]["seeds"])
    n_rocm = seeds * (1 + sum(len(cfg["rocm"]["betas"][d]) for d in cfg["rocm"]["divergences"]))
    assert counts["train_rocm"] == n_rocm == 39
    n_base = len(cfg["baselines"]["methods"]) * len(cfg["baselines"]["seeds"])
    assert counts.get("train_baseline", 0) in (0, n_base)
    n_untrained = 2 if any(m in ("ddpo", "d3po", "dpok") for m in cfg["baselines"]["methods"]) else 1
    n_eval = n_rocm + counts.get("train_baseline", 0) + n_untrained  # every run, the base LCM and base diffusion
    assert counts["sample_eval"] == n_eval and counts["evaluate"] == n_eval and counts["collect_scores"] == 2
    assert not any(rule.startswith("sandbox_") for rule in counts)
    for rule in ("stats", "table1", "table_tuning", "table_divergence_beta", "fig_beta_sweep", "fig_efficiency",
                 "fig_training_curves", "fig_divergence_gallery"):
        assert counts[rule] == 1, rule
    assert counts["publish_results"] == 6  # 2 score tables, 2 statistics tables, chosen betas, probe curves (no sandbox)


def test_two_gpus_per_run_request_two_gpus_per_rocm_job(tmp_path):
    """train.num_processes: 2 over the paper config: each ROCM job asks for 2 GPUs and threads for both processes;
    baselines keep one GPU."""
    import re

    override = tmp_path / "two_gpus.yaml"
    override.write_text("train: {num_processes: 2, batch_size: 2}\n")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "16", "--resources", "gpu=2",
                          "--directory", str(tmp_path), "--snakefile", str(REPO / "Snakefile"),
                          "--configfile", str(PAPER), str(override)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    threads: (\d+)\n    resources: (.*)$", res.stdout, re.M)
    rocm = [(t, r) for rule, t, r in jobs if rule == "train_rocm"]
    assert len(rocm) == 39
    assert all(t == "16" and "gpu=2" in r for t, r in rocm), rocm[:3]
    baselines = [r for rule, _, r in jobs if rule == "train_baseline"]
    assert len(baselines) == 12 and all("gpu=1" in r for r in baselines), baselines[:3]


def test_staging_lists_every_model_of_the_config():
    from rocm_rlhf.infra.staging import dataset_ids, model_assets

    cfg = load_config(PAPER)
    repos = {repo for repo, _ in model_assets(cfg)}
    assert {"SimianLuo/LCM_Dreamshaper_v7", "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "yuvalkirstain/PickScore_v1", "openai/clip-vit-large-patch14", "xswu/HPSv2",
            "Salesforce/blip-itm-large-coco", "THUDM/ImageReward"} <= repos
    assert ("xswu/HPSv2", "HPS_v2.1_compressed.pt") in model_assets(cfg)
    assert dataset_ids(cfg) == ["yuvalkirstain/pickapic_v1_no_images"]
    # an overridden reward checkpoint replaces the pinned one
    cfg["rewards"]["pickscore"] = {"model_id": "me/my-pickscore"}
    repos = {repo for repo, _ in model_assets(cfg, generators=[], metrics=["pickscore"], reward=False)}
    assert "me/my-pickscore" in repos and "yuvalkirstain/PickScore_v1" not in repos
    # so does every other keyword that names an asset (processor, tokenizer, CLIP), and filename the checkpoint's file
    cfg["rewards"]["hpsv2"] = {"model_id": "me/hps", "filename": "hps.pt", "tokenizer_id": "me/tok"}
    cfg["rewards"]["aesthetic"] = {"clip_model_id": "me/clip"}
    assets = model_assets(cfg, generators=[], metrics=["hpsv2", "aesthetic"], reward=False)
    assert assets == [("me/hps", "hps.pt"), ("me/tok", None),
                      ("camenduru/improved-aesthetic-predictor", "sac+logos+ava1-l14-linearMSE.pth"), ("me/clip", None)]


def test_preflight_names_every_missing_model_offline(tmp_path, monkeypatch):
    from rocm_rlhf.infra.staging import model_assets, preflight

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    cfg = load_config(PAPER)
    with pytest.raises(ModelNotAvailableError) as err:
        preflight(model_assets(cfg, generators=["lcm"], metrics=[], reward=True))
    msg = str(err.value)
    assert "SimianLuo/LCM_Dreamshaper_v7" in msg and "yuvalkirstain/PickScore_v1" in msg
    assert "stage_models" in msg


def test_training_job_fails_at_once_when_offline_and_unstaged(tmp_path):
    """The real stage entry point, as a cluster node would run it: one error, before any work, nothing written."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hf/hub"))
    prompts = tmp_path / "train.csv"
    prompts.write_text("prompt_id,prompt,split\npap-00000,a cat,train\n")
    out = tmp_path / "runs" / "rocm-kl-b0.01-s0"
    res = subprocess.run(
        [sys.executable, "-m", "rocm_rlhf.infra.cli", "stage", "train", "--config", str(PAPER), "--input",
         f"prompts={prompts}", "--output", f"run_json={out / 'run.json'}", "--wildcard", "run=rocm-kl-b0.01-s0",
         "--param", "model_id=SimianLuo/LCM_Dreamshaper_v7"],
        capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode != 0
    assert "ModelNotAvailableError" in res.stderr and "SimianLuo/LCM_Dreamshaper_v7" in res.stderr
    assert not out.exists()


def test_a_mistyped_local_path_is_not_listed_as_a_hub_asset_to_stage():
    """results/tiny_hub/SimianLuo/LCM_Dreamshaper_v8 does not exist and cannot be a hub id: the preflight must not ask
    to download it (the loader then reports the missing path)."""
    from rocm_rlhf.infra.config import load_config
    from rocm_rlhf.infra.staging import dataset_ids, model_assets

    cfg = load_config(REPO / "config" / "paper.yaml", overrides={
        "model": {"lcm": "results/tiny_hub/SimianLuo/LCM_Dreamshaper_v8"},
        "prompts": {"pickapic": {"dataset": "./captions.parquet"}}})
    repos = [repo for repo, _ in model_assets(cfg)]
    assert "results/tiny_hub/SimianLuo/LCM_Dreamshaper_v8" not in repos and cfg["model"]["diffusion"] in repos
    assert dataset_ids(cfg) == []


def test_the_paper_setting_asks_for_cuda_and_refuses_a_machine_without_it(monkeypatch):
    """paper.yaml sets device: cuda: without a usable GPU a job fails at once naming the key and the remedies, instead
    of training an SD-sized UNet on the CPU; paper-tiny runs on the CPU on purpose."""
    import torch

    from rocm_rlhf.infra.utils import pick_device

    assert load_config(REPO / "config" / "paper.yaml")["device"] == "cuda"
    assert load_config(REPO / "config" / "paper.yaml", REPO / "config" / "paper-tiny.yaml")["device"] == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="config key 'device' is 'cuda' but no CUDA device is usable.*device: cpu"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"
