"""The fork server (rocm_rlhf.infra.forkserver): a job's stage runs in a fork of one preloaded process, as it would in
the job's own process: the same outputs, log, stdout and stderr, working directory, environment, threads and
declared-config check; a failure fails the job, a cancelled job's child dies, no server means the job runs itself.
The whole ci pipeline runs through it (conftest's ci_run); test_pipeline_ci checks its outputs are byte-identical to
jobs run without it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rocm_rlhf.infra import forkserver

TESTS = Path(__file__).resolve().parent

CLIENT = """
import sys
from rocm_rlhf.infra.jobs import make_job, run_stage
import _forkserver_stages as stages
out, log, name = sys.argv[1], sys.argv[2], sys.argv[3]
code = None if sys.argv[4] == "None" else int(sys.argv[4]) if sys.argv[4].isdigit() else sys.argv[4]
job = make_job(input={"a": "in_a.txt", "pair": ["p1", "p2"]}, output=[out],
               params={"value": {"k": [1, 2]}, "code": code},
               config={"train": {"steps": 7, "lr": 0.1}}, log=[log], threads=2)
run_stage(job, getattr(stages, name))
"""


@pytest.fixture
def server(tmp_path, monkeypatch):
    path = str(tmp_path / "fs.sock")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    proc, path = forkserver.start(socket_path=path, log_path=str(tmp_path / "server.log"), timeout=60,
                                  modules=["rocm_rlhf.infra.jobs", "_forkserver_stages"])
    assert os.path.exists(path), (tmp_path / "server.log").read_text()
    yield proc, path
    forkserver.stop(proc, path)
    assert not os.path.exists(path)


def client(tmp_path, name, socket_path, wait=True, code="0", **env):
    full = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
                FS_TEST_VAR="from-the-job", **env)
    if socket_path:
        full[forkserver.ENV] = socket_path
    else:
        full.pop(forkserver.ENV, None)
    args = [sys.executable, "-c", CLIENT, str(tmp_path / "out.json"), str(tmp_path / "job.log"), name, code]
    if not wait:
        return subprocess.Popen(args, cwd=tmp_path, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(args, cwd=tmp_path, env=full, capture_output=True, text=True, timeout=120)


def _stage_pid(out, timeout=60) -> int:
    """The pid the sleeper stage writes to its output once it runs."""
    deadline = time.time() + timeout
    while not (out.exists() and out.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    return int(out.read_text())


def _assert_gone(pid: int, what: str, timeout=30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"{what} is still running")


def test_a_stage_runs_in_a_fork_of_the_server_as_in_its_own_process(tmp_path, server):
    proc, path = server
    res = client(tmp_path, "record", path)
    assert res.returncode == 0, res.stderr
    got = json.loads((tmp_path / "out.json").read_text())
    assert got["pid"] != proc.pid  # a child of the server, not the client and not the server itself
    assert got == {"pid": got["pid"], "cwd": str(tmp_path), "env": "from-the-job", "threads": 2, "steps": 7,
                   "inputs": ["in_a.txt", ["p1", "p2"]], "named": ["p1", "p2"], "param": {"k": [1, 2]},
                   "torch_threads": 2}
    log = (tmp_path / "job.log").read_text()
    assert "record started (pid" in log and "forked by the fork server" in log and "record finished" in log
    assert "stdout of the stage" in log and "stderr of the stage" in log  # Python-level output goes to the log
    # the same job without a server: the client's own process runs it, with the same result but its own pid
    (tmp_path / "job.log").unlink()
    res = client(tmp_path, "record", None)
    assert res.returncode == 0, res.stderr
    alone = json.loads((tmp_path / "out.json").read_text())
    assert {k: v for k, v in alone.items() if k != "pid"} == {k: v for k, v in got.items() if k != "pid"}
    assert "forked by" not in (tmp_path / "job.log").read_text()


def test_the_child_writes_to_the_jobs_own_stdout_and_stderr(tmp_path, server):
    # C-level output (fd 1 and 2) of the child reaches the job's process: a stage with no log writes there
    code = ("import os, sys; from rocm_rlhf.infra.jobs import make_job, run_stage; import _forkserver_stages as s;"
            "run_stage(make_job(input={'pair': []}, output=[sys.argv[1]], params={'value': 0, 'code': 0},"
            " config={'train': {'steps': 1}}), s.record)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    env[forkserver.ENV] = server[1]
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o.json")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "stdout of the stage" in res.stdout and "forked by the fork server" in res.stdout
    assert "stderr of the stage" in res.stderr


def test_a_failing_stage_fails_the_job_with_its_traceback_in_the_log(tmp_path, server):
    res = client(tmp_path, "undeclared", server[1])
    assert res.returncode != 0
    assert "stage undeclared failed (exit status 1 in the fork server): see" in res.stderr
    log = (tmp_path / "job.log").read_text()
    assert "UndeclaredConfigKey" in log and "train.lr" in log
    # the server goes on serving
    assert client(tmp_path, "record", server[1]).returncode == 0


def test_a_cancelled_job_kills_its_child(tmp_path, server):
    job = client(tmp_path, "sleeper", server[1], wait=False)
    out = tmp_path / "out.json"
    child = _stage_pid(out)
    os.kill(child, 0)  # running
    job.send_signal(signal.SIGTERM)  # what Snakemake does to a cancelled job's process
    job.wait(timeout=30)
    _assert_gone(child, "the cancelled job's child")
    assert client(tmp_path, "record", server[1]).returncode == 0


def test_no_server_or_a_stale_socket_runs_the_job_in_its_own_process(tmp_path):
    stale = tmp_path / "stale.sock"
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()  # the path exists, nothing listens
    for path in (str(tmp_path / "absent.sock"), str(stale)):
        res = client(tmp_path, "record", path)
        assert res.returncode == 0, res.stderr
        assert "forked by" not in (tmp_path / "job.log").read_text()


def test_the_server_exits_with_the_workflow_process(tmp_path):
    workflow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    proc, path = forkserver.start(socket_path=str(tmp_path / "fs.sock"), parent=workflow.pid, timeout=60,
                                  modules=[])
    assert os.path.exists(path) and proc.poll() is None
    workflow.kill()
    workflow.wait()
    proc.wait(timeout=30)
    assert not os.path.exists(path)


def test_preloading_imports_what_the_stages_import():
    assert {"torch", "diffusers", "peft", "transformers", "rocm_rlhf.training.run", "rocm_rlhf.evaluation",
            "rocm_rlhf.rewards"} <= set(forkserver.PRELOAD)
    times = forkserver.preload(["json", "no_such_module_xyz"])  # a failed import is skipped, not fatal
    assert set(times) == {"json", "no_such_module_xyz"}


def test_a_killed_server_takes_its_children_and_fails_their_jobs(tmp_path, server):
    proc, path = server
    job = client(tmp_path, "sleeper", path, wait=False)
    out = tmp_path / "out.json"
    child = _stage_pid(out)
    proc.kill()  # SIGKILL: no cleanup in the server
    # the job fails at once (it does not hang or rerun the stage), and its stdout and stderr close: the child that
    # held them is gone too
    _, err = job.communicate(timeout=30)
    assert job.returncode != 0 and b"closed the connection before the stage finished" in err
    _assert_gone(child, "the killed server's child")


def test_a_server_whose_preload_initialised_cuda_does_not_serve(monkeypatch):
    import torch

    assert forkserver.fork_unsafe() == ""  # here: CUDA untouched (or absent)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert "CUDA was initialised" in forkserver.fork_unsafe()


@pytest.mark.parametrize("code, status, stderr", [("None", 0, ""), ("0", 0, ""), ("3", 3, "exit status 3"),
                                                  ("a message", 1, "a message")])
def test_the_job_exits_with_the_status_a_fresh_process_would(tmp_path, server, code, status, stderr):
    for path in (server[1], None):  # through the server, and in the job's own process: the same
        res = client(tmp_path, "exits", path, code=code)
        assert res.returncode == status, (path, res.stderr)
        assert stderr.replace("exit status 3", "" if path is None else "exit status 3") in res.stderr


def test_a_librarys_own_log_handler_writes_to_the_jobs_log(tmp_path, server):
    # the handler was made in the server (preload). In a job's own process, transformers and diffusers are imported
    # inside the stage (lazily), so their handlers are made inside its log redirection and write to the job's log:
    # through the server, they must too, not to the Snakemake console or the server's log
    res = client(tmp_path, "library_logs", server[1])
    assert res.returncode == 0, res.stderr
    assert "a library's warning" in (tmp_path / "job.log").read_text()
    assert "a library's warning" not in res.stderr
    assert "a library's warning" not in (tmp_path / "server.log").read_text()
