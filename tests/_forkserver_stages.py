"""Stages for tests/test_forkserver.py: importable by name in the fork server's children."""

import json
import os
import sys
import time

from rocm_rlhf.infra.jobs import stage


@stage(reads=["train.steps"])
def record(job):
    """Write where and how it ran: pid, cwd, an environment variable, threads, the declared config and inputs."""
    print("stdout of the stage", flush=True)
    print("stderr of the stage", file=sys.stderr, flush=True)
    with open(job.output[0], "w") as fh:
        json.dump({"pid": os.getpid(), "cwd": os.getcwd(), "env": os.environ.get("FS_TEST_VAR"),
                   "threads": job.threads, "steps": job.config["train"]["steps"], "inputs": list(job.input),
                   "named": job.input.pair, "param": job.params.value}, fh)


@stage(reads=["train.steps"])
def undeclared(job):
    job.config["train"]["lr"]  # not declared: UndeclaredConfigKey


@stage(reads=[])
def sleeper(job):
    with open(job.output[0], "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(600)
