"""Stages for tests/test_forkserver.py: importable by name in the fork server's children."""

import json
import logging
import os
import sys
import time

from rocm_rlhf.infra.jobs import stage

# A library's logger with its own stderr handler, made at import (in the server, when it preloads this module), as
# transformers and diffusers make theirs
LIB = logging.getLogger("fs_test_lib")
LIB.addHandler(logging.StreamHandler())
LIB.propagate = False


@stage(reads=["train.steps"])
def record(job):
    """Write where and how it ran: pid, cwd, an environment variable, threads, the declared config and inputs."""
    print("stdout of the stage", flush=True)
    print("stderr of the stage", file=sys.stderr, flush=True)
    with open(job.output[0], "w") as fh:
        json.dump({"pid": os.getpid(), "cwd": os.getcwd(), "env": os.environ.get("FS_TEST_VAR"),
                   "threads": job.threads, "steps": job.config["train"]["steps"], "inputs": list(job.input),
                   "named": job.input.pair, "param": job.params.value,
                   "torch_threads": __import__("torch").get_num_threads()}, fh)  # run_stage set them


@stage(reads=["train.steps"])
def undeclared(job):
    job.config["train"]["lr"]  # not declared: UndeclaredConfigKey


@stage(reads=[])
def sleeper(job):
    with open(job.output[0], "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(600)


@stage(reads=[])
def exits(job):
    """sys.exit with the value in params.code."""
    sys.exit(job.params.code)


@stage(reads=[])
def library_logs(job):
    LIB.warning("a library's warning")
    with open(job.output[0], "w") as fh:
        fh.write("ok")
