"""One ROCM run on several processes (train.num_processes) through accelerate: the real launch, on CPU with gloo.

Two processes with half the batch each must train the same adapter, and log the same rewards, as one process with
the whole batch (up to floating-point summation order), since they draw the same global batch and average their
gradients before clipping.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from rocm_rlhf.infra.config import ConfigError, validate_config
from rocm_rlhf.infra.jobs import make_job, run_stage
from rocm_rlhf.pipeline.train import train
from rocm_rlhf.training import distributed
from rocm_rlhf.training.distributed import AcceleratedGroup, launch_command, processes_for

torch.set_num_threads(1)

PROMPTS = ["a red circle on the left", "a blue square at the top", "a green triangle", "a red square"]


@pytest.fixture(scope="module")
def tiny_reward_dir(tmp_path_factory):
    """A random proxy_aesthetic model for the tiny LCM's 16x16 images, saved as the sandbox saves its proxies."""
    from rocm_rlhf.rewards.sandbox import ProxyAestheticModel

    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("reward") / "proxy_aesthetic"
    ProxyAestheticModel(width=4, image_size=16).save_pretrained(path)
    return path


def _job(tmp_path, run, model_dir, reward_dir, num_processes, folder):
    cfg = validate_config({
        "device": "cpu",
        "model": {"num_steps": 3, "guidance_scale": 3.0},
        "train": {"steps": 4, "batch_size": 4, "lr": 0.02, "checkpoint_every": 2, "lora": {"rank": 4, "alpha": 4},
                  "reward": "proxy_aesthetic", "num_processes": num_processes},
        "rewards": {"proxy_aesthetic": {"model_id": str(reward_dir)}},
        "figures": {"quality_metric": "proxy_aesthetic"},  # the held-out probe (process 0) scores the reward
    })
    prompts = tmp_path / "prompts.csv"
    pd.DataFrame({"prompt_id": range(len(PROMPTS)), "prompt": PROMPTS}).to_csv(prompts, index=False)
    out = tmp_path / "runs" / folder
    return make_job(input={"prompts": str(prompts), "val_prompts": str(prompts), "model": [],
                           "reward": str(reward_dir)},
                    output={"run_json": str(out / "run.json"), "log_csv": str(out / "log.csv"),
                            "curve_csv": str(out / "curve.csv"), "adapter": str(out / "adapter")},
                    params={"model_id": str(model_dir)},
                    wildcards={"run": run}, config=cfg, threads=num_processes)


@pytest.mark.slow
def test_two_processes_train_the_same_adapter_as_one(tmp_path, tiny_lcm_dir, tiny_reward_dir, capsys):
    run_stage(_job(tmp_path, "rocm-kl-b0.1-s0", tiny_lcm_dir, tiny_reward_dir, 1, "one"), train)
    run_stage(_job(tmp_path, "rocm-kl-b0.1-s0", tiny_lcm_dir, tiny_reward_dir, 2, "two"), train)
    out = capsys.readouterr().out
    assert "accelerate.commands.launch --multi_gpu --num_processes 2" in out  # the real launcher ran
    assert "2 processes x 2 samples" in out  # the batch arithmetic names the split, printed once (rank 0)
    assert out.count("batch arithmetic") == 2

    one, two = tmp_path / "runs" / "one", tmp_path / "runs" / "two"
    info = json.loads((two / "run.json").read_text())
    assert info["num_processes"] == 2 and json.loads((one / "run.json").read_text())["num_processes"] == 1
    l1, l2 = pd.read_csv(one / "log.csv"), pd.read_csv(two / "log.csv")
    assert list(l2["reward_queries"]) == [4, 8, 12, 16]  # global counts, as in one process
    for col in ("reward_mean", "reward_std", "divergence_mean", "loss", "grad_norm", "div_step_0"):
        torch.testing.assert_close(torch.tensor(l2[col].values), torch.tensor(l1[col].values), rtol=1e-4,
                                   atol=1e-6, msg=col)
    assert l1["divergence_mean"].iloc[-1] > 0  # the adapter moved, so equal logs are not vacuous
    a1 = load_file(one / "adapter" / "pytorch_lora_weights.safetensors")
    a2 = load_file(two / "adapter" / "pytorch_lora_weights.safetensors")
    assert a1.keys() == a2.keys()
    moved = 0
    for k in a1:
        # Adam divides by sqrt(v): on the tiniest gradients (self-attention keys) the summation-order difference
        # of the averaged gradient reaches ~4e-5 here, against the 0.08 that 4 steps at lr 0.02 can move a weight;
        # a missing or wrong all-reduce leaves the ranks' adapters apart by the order of lr
        torch.testing.assert_close(a2[k], a1[k], rtol=0, atol=1e-4, msg=k)
        moved += int(a1[k].abs().max() > 1e-3)
    assert moved > 0
    # the held-out probe ran on rank 0 at step 0 and each checkpoint, on the same weights as in one process
    c1, c2 = pd.read_csv(one / "curve.csv"), pd.read_csv(two / "curve.csv")
    assert list(c2["step"]) == list(c1["step"]) == [0, 2, 4]
    torch.testing.assert_close(torch.tensor(c2["mean"].values), torch.tensor(c1["mean"].values), rtol=1e-4, atol=1e-5)
    # checkpoints were written once, by rank 0 (nothing left half-written)
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step_000002", "step_000004"]

    # a preempted two-process run resumes: both ranks load the step-2 checkpoint and finish as the uninterrupted run
    import shutil

    shutil.rmtree(two / "checkpoints" / "step_000004")
    shutil.rmtree(two / "adapter")
    for f in ("run.json", "log.csv"):
        (two / f).unlink()
    run_stage(_job(tmp_path, "rocm-kl-b0.1-s0", tiny_lcm_dir, tiny_reward_dir, 2, "two"), train)
    assert "resumed from" in capsys.readouterr().out
    resumed = load_file(two / "adapter" / "pytorch_lora_weights.safetensors")
    assert all(torch.equal(resumed[k], a2[k]) for k in a2)
    timing = ["wall_s", "device_hours"]  # the replayed steps take their own time
    assert pd.read_csv(two / "log.csv").drop(columns=timing).equals(l2.drop(columns=timing))


@pytest.mark.slow
def test_a_failing_worker_fails_the_stage_with_its_error(tmp_path, tiny_lcm_dir, tiny_reward_dir, capsys):
    job = _job(tmp_path, "rocm-kl-b0.1-s0", tiny_lcm_dir, tiny_reward_dir, 2, "bad")
    job.config["rewards"]["proxy_aesthetic"]["model_id"] = str(tmp_path / "missing")
    with pytest.raises(RuntimeError, match="2-process training run failed"):
        run_stage(job, train)
    assert str(tmp_path / "missing") in capsys.readouterr().out  # the worker's own error reached the job's log
    assert not (tmp_path / "runs" / "bad" / "run.json").exists()


def test_shards_are_contiguous_and_cover_the_batch():
    groups = []
    for rank in range(3):
        g = object.__new__(AcceleratedGroup)
        g.rank, g.world_size = rank, 3
        groups.append(g)
    batch = list(range(6))
    assert [g.shard(batch) for g in groups] == [[0, 1], [2, 3], [4, 5]]
    t = torch.arange(12).view(6, 2)
    assert torch.equal(torch.cat([g.shard(t) for g in groups]), t)
    with pytest.raises(ValueError, match="batch of 4 does not split evenly over 3 processes"):
        groups[0].shard(list(range(4)))


def test_config_rejects_a_batch_that_does_not_split():
    with pytest.raises(ConfigError, match="train.num_processes.*batch_size = 6 does not split evenly over 4"):
        validate_config({"train": {"batch_size": 6, "num_processes": 4}})
    with pytest.raises(ConfigError, match="train.num_processes"):
        validate_config({"train": {"num_processes": 0}})
    assert validate_config({"train": {"batch_size": 8, "num_processes": 4}})["train"]["num_processes"] == 4


def test_only_rocm_is_spread_and_the_workers_receive_train_runs_arguments(tmp_path, monkeypatch):
    cfg = validate_config({"train": {"batch_size": 8, "num_processes": 2}})
    assert processes_for(cfg, "rocm") == 2
    assert [processes_for(cfg, m) for m in ("rlcm", "ddpo", "d3po", "dpok")] == [1, 1, 1, 1]
    seen = {}

    def fake_launch(n, module_args, threads=1):
        seen.update(n=n, module_args=list(module_args), threads=threads)
        seen["file"] = json.loads(open(module_args[1]).read())

    monkeypatch.setattr(distributed, "launch", fake_launch)
    arguments = {"config": cfg, "method": "rocm", "run_id": "rocm-kl-b0.1-s0", "seed": 0, "run_dir": tmp_path / "r",
                 "model_id": "m", "reward_name": "proxy_pick", "reward_kwargs": {}, "prompts": ["a"],
                 "divergence": "kl", "beta": 0.1}
    distributed.launch_run(2, arguments, threads=3)
    assert seen["n"] == 2 and seen["threads"] == 3 and seen["module_args"][0] == "rocm_rlhf.training.distributed"
    assert seen["file"] == {"threads": 3, "train_run": {**arguments, "run_dir": str(tmp_path / "r")}}
    assert not os.path.exists(seen["module_args"][1])  # the temporary file is removed with the launch
    args = seen["module_args"]
    cmd = launch_command(2, args, threads=2, port=29555)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "2" and cmd[cmd.index("--main_process_port") + 1] == "29555"
    assert cmd[cmd.index("-m", 3):][:2] == ["-m", "rocm_rlhf.training.distributed"]
    with pytest.raises(ValueError, match="at least 2 processes"):
        launch_command(1, ["rocm_rlhf.training.distributed"])
