"""The paper's setting end to end at toy size: config/paper.yaml + config/paper-tiny.yaml, every hub model replaced by a
tiny random one in the hub's layout (rule tiny_hub), offline with an empty Hugging Face cache, through the same
loaders, staging preflight, training, sampling, scoring, statistics, tables and figures. The run happens once per
test session, in a temporary working directory (never in the checkout's results/ or paper_figures/)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
CONFIGS = [REPO / "config" / "paper.yaml", REPO / "config" / "paper-tiny.yaml"]
METRICS = ["pickscore", "clipscore", "hpsv2", "aesthetic", "blipscore", "imagereward"]
BASELINES = ["rlcm", "ddpo", "d3po", "dpok"]


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("paper_tiny")
    committed = _snapshot(REPO / "paper_figures")
    # offline, and with an empty cache: every model and the captions must come from the tiny hub folders
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(wd / "hf_home"), PYTHONHASHSEED="0")
    env.pop("HF_HUB_CACHE", None)
    env.pop("HF_DATASETS_CACHE", None)
    # the target first: --configfile takes several values and would swallow a target after it
    res = subprocess.run([sys.executable, "-m", "snakemake", "all", "--cores", "2", "--snakefile",
                          str(REPO / "Snakefile"), "--directory", str(wd), "--configfile", *map(str, CONFIGS)],
                         capture_output=True, text=True, env=env)
    if res.returncode != 0:
        logs = "\n".join(p.read_text()[-3000:] for p in (wd / "logs").rglob("*.log")) if (wd / "logs").exists() else ""
        raise AssertionError(f"the paper-tiny run failed:\n{res.stdout[-5000:]}\n{res.stderr[-5000:]}\n{logs}")
    assert _snapshot(REPO / "paper_figures") == committed, "the run wrote into the checkout's paper_figures/"
    return wd


@pytest.fixture(scope="session")
def config():
    from rocm_rlhf.infra.config import load_config

    return load_config(*CONFIGS)


def test_overlay_keeps_the_papers_code_path(config):
    from rocm_rlhf.infra.config import load_config

    paper = load_config(CONFIGS[0])
    assert config["setting"] == "hub" and config["prompts"]["source"] == "pickapic"
    for key in ("num_steps", "guidance_scale", "dtype"):
        assert config["model"][key] == paper["model"][key], key
    assert config["train"]["batch_size"] == 1 and config["train"]["lora"] == paper["train"]["lora"]
    assert config["rocm"]["divergences"] == paper["rocm"]["divergences"]
    assert config["baselines"]["methods"] == BASELINES and config["evaluation"]["metrics"] == METRICS
    for method in ("ddpo", "d3po", "dpok"):  # each baseline's own sampler, as its reference
        for key in ("sample_steps", "guidance_scale"):
            assert config["baselines"][method][key] == paper["baselines"][method][key], (method, key)
    assert config["baselines"]["ddpo"]["num_minibatches"] > 1


def test_table1_has_a_row_for_every_method_and_a_column_for_every_metric(tiny_run, config):
    t1 = pd.read_csv(tiny_run / "paper_figures" / "paper-tiny" / "table1.csv")
    rocm = ["rocm-none-b0"] + [f"rocm-{d}-b{config['rocm']['betas'][d][0]:g}" for d in config["rocm"]["divergences"]]
    arms = ["base", "base-ddim", *rocm, *BASELINES]  # base-ddim: the diffusion baselines' untrained start
    assert set(t1["arm"]) == set(arms)
    for arm in arms:
        rows = t1[t1["arm"] == arm]
        assert set(rows["metric"]) == {*METRICS, "diversity"}, arm
        assert rows["mean"].map(math.isfinite).all(), rows
    header = (tiny_run / "paper_figures" / "paper-tiny" / "table1.md").read_text().splitlines()[0]
    assert all(m in header for m in METRICS)


def test_every_baseline_trains_with_a_nonzero_gradient_norm(tiny_run, config):
    for method in BASELINES:
        log = pd.read_csv(tiny_run / f"results/paper-tiny/runs/{method}-s0/log.csv")
        assert log["grad_norm"].map(math.isfinite).all() and (log["grad_norm"] > 0).any(), (method, log)
        assert log["reward_queries"].iloc[-1] >= config["train"]["steps"] * config["train"]["batch_size"], method
        meta = json.loads((tiny_run / f"results/paper-tiny/runs/{method}-s0/run.json").read_text())
        assert meta["config"]["setting"] == "hub"
    for run in ("rocm-none-b0-s0", "rocm-kl-b0.01-s0"):
        log = pd.read_csv(tiny_run / f"results/paper-tiny/runs/{run}/log.csv")
        assert len(log) == config["train"]["steps"] and (log["reward_queries"] == log["step"]).all()  # batch 1


def test_scores_of_every_run_and_metric(tiny_run):
    scores = pd.read_csv(tiny_run / "results/paper-tiny/scores/all.csv")
    assert set(scores["metric"]) == {*METRICS, "diversity"}
    assert scores.loc[scores.metric != "diversity", "value"].notna().all()
    for stem in ("fig_beta_sweep", "fig_efficiency", "fig_training_curves", "fig_divergence_gallery"):
        assert (tiny_run / "paper_figures" / "paper-tiny" / f"{stem}.png").stat().st_size > 1000


def test_the_stand_ins_have_the_hub_layouts(tiny_run):
    import pyarrow.parquet as pq

    from rocm_rlhf.infra.tiny_hub import PICKAPIC_COLUMNS

    root = tiny_run / "results/tiny_hub"
    lcm, sd = root / "SimianLuo/LCM_Dreamshaper_v7", root / "stable-diffusion-v1-5/stable-diffusion-v1-5"
    for folder, pipeline, scheduler in ((lcm, "LatentConsistencyModelPipeline", "LCMScheduler"),
                                        (sd, "StableDiffusionPipeline", "PNDMScheduler")):
        index = json.loads((folder / "model_index.json").read_text())
        assert index["_class_name"] == pipeline and index["scheduler"] == ["diffusers", scheduler]
        assert index["safety_checker"] == ["stable_diffusion", "StableDiffusionSafetyChecker"]
        for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "safety_checker", "feature_extractor"):
            assert (folder / part).is_dir(), (folder, part)
    assert json.loads((lcm / "unet/config.json").read_text())["time_cond_proj_dim"]
    assert json.loads((sd / "unet/config.json").read_text())["time_cond_proj_dim"] is None
    for path in ("xswu/HPSv2/HPS_v2.1_compressed.pt", "THUDM/ImageReward/ImageReward.pt",
                 "camenduru/improved-aesthetic-predictor/sac+logos+ava1-l14-linearMSE.pth",
                 "yuvalkirstain/PickScore_v1/config.json", "openai/clip-vit-large-patch14/tokenizer_config.json",
                 "laion/CLIP-ViT-H-14-laion2B-s32B-b79K/vocab.json", "Salesforce/blip-itm-large-coco/vocab.txt",
                 "google-bert/bert-base-uncased/vocab.txt"):
        assert (root / path).is_file(), path
    data = root / "datasets/yuvalkirstain/pickapic_v1_no_images/data"
    for split in ("train", "validation", "test", "validation_unique", "test_unique"):
        assert pq.read_schema(data / f"{split}-00000-of-00001.parquet").names == list(PICKAPIC_COLUMNS)
    train = pd.read_csv(tiny_run / "results/paper-tiny/prompts/train.csv")
    evals = pd.read_csv(tiny_run / "results/paper-tiny/prompts/eval.csv")
    assert not set(train["prompt"]) & set(evals["prompt"])  # the eval captions come from test_unique
