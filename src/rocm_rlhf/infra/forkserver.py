"""A fork server for pipeline stages: pay the imports once per workflow run instead of once per job.

Every training, sampling and scoring job of the sandbox starts a Python process that spends 5 to 7 s importing torch,
diffusers, peft and transformers before any work (benchmarks/README.md), about as long as a sampling job's work. The
workflow (Snakefile ``onstart``, local execution only) starts one server that imports them and listens on a Unix
socket. A job's script still starts as Snakemake starts it, but :func:`rocm_rlhf.infra.jobs.run_stage` hands the job
to the server (:func:`submit`), which forks a child that runs the same stage function on the same job, in the job's
working directory and environment, with the job's own stdout and stderr (passed over the socket), and reports the
child's exit status back; the script exits with it. What the stage computes is the same code in the same state: the
server only imports (no torch op, no RNG draw, no thread pool started before a fork), and every stage seeds its own
generators. Killing the job's process (Snakemake cancelling a job) kills the child.

Any failure to reach the server (none started, another machine, a stale socket) runs the stage in the job's own
process as before, so a Slurm job or a ``rocm-rlhf stage`` call never depends on it. Disable it with the config key
``fork_server: false``.

    python -m rocm_rlhf.infra.forkserver SOCKET [--parent PID]   # what the Snakefile starts
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pickle
import select
import signal
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ENV = "ROCM_RLHF_FORK_SERVER"  # the socket's path, for the jobs of one workflow run

# What the stages import lazily, imported once by the server (a module that fails to import is skipped: the stage
# then imports it itself, or fails as it would have without the server).
# ``module:attribute`` also gets the attribute (diffusers loads its pipeline classes lazily, on first access). A job's
# log ends with the top-level packages its stage still imported itself, to keep this list in step.
PRELOAD = (
    "torch",
    "diffusers",
    "diffusers:LatentConsistencyModelPipeline",
    "diffusers:StableDiffusionPipeline",
    "diffusers:DDIMScheduler",
    "peft",
    "transformers",
    "accelerate",
    "torch.utils.tensorboard",  # the default tracker (train.trackers)
    "jsonschema",
    "safetensors.torch",
    "pandas",
    "scipy.stats",
    "rocm_rlhf.models",
    "rocm_rlhf.training.run",
    "rocm_rlhf.training.monitor",
    "rocm_rlhf.evaluation",
    "rocm_rlhf.rewards",
    "rocm_rlhf.analysis.figures",
)

_HEADER = struct.Struct("!Q")
_STATUS = struct.Struct("!i")
DECLINED = -1  # the server could not fork: the job runs in its own process
_PRIVATE_DIR = "rocm-rlhf-fs-"  # default_socket_path's directories, removed by stop()
log = logging.getLogger(__name__)


def default_socket_path() -> str:
    """A fresh socket path in a new private directory (mode 0700: only this user can connect, and a request can run
    code). Unix socket paths are limited to about 100 bytes, so it lives in the temporary directory."""
    return os.path.join(tempfile.mkdtemp(prefix=_PRIVATE_DIR), "server.sock")


# --- the client: a job's process --------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """A Snakemake value as plain Python (str subclasses such as Snakemake's file names become str)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _named(seq: Any) -> tuple[list, dict]:
    """A Snakemake named list (or :class:`rocm_rlhf.infra.jobs.Named`) as (positional items, named items)."""
    items = [_plain(v) for v in list(seq or [])]
    names = {}
    if hasattr(seq, "keys"):
        for k in seq.keys():
            names[str(k)] = _plain(getattr(seq, k))
    return items, names


def job_payload(job: Any, fn: Callable) -> dict:
    """What the server needs to run ``fn`` on ``job`` as this process would: plain data only."""
    return {
        "stage": (fn.__module__, fn.__qualname__),
        "job": {k: _named(getattr(job, k, None)) for k in ("input", "output", "params", "wildcards", "log")},
        "config": _plain(dict(getattr(job, "config", {}) or {})),
        "threads": getattr(job, "threads", 1),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "path": list(sys.path),
    }


def submit(job: Any, fn: Callable, socket_path: str | None = None) -> int | None:
    """Run the stage ``fn`` on ``job`` in the fork server at ``socket_path`` (default: the ``ROCM_RLHF_FORK_SERVER``
    environment variable) and return the stage's exit status (0 = success). ``None`` when no server answers: the
    caller runs the stage itself. The server's child writes to this process's stdout and stderr."""
    path = socket_path or os.environ.get(ENV)
    if not path or not os.path.exists(path):
        return None
    try:
        payload = pickle.dumps(job_payload(job, fn))
    except Exception as exc:  # a value that does not pickle: run here
        print(f"[rocm-rlhf] fork server not used ({type(exc).__name__}: {exc})", file=sys.stderr, flush=True)
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        socket.send_fds(sock, [_HEADER.pack(len(payload))], [1, 2])  # this process's stdout and stderr
        sock.sendall(payload)
    except OSError:  # stale socket, server gone or on another machine: run here
        sock.close()
        return None
    # From here the stage runs in the server: wait for its status. A server that dies mid-job is a failed job (the
    # stage may have written part of its outputs; Snakemake removes them), not a silent rerun here.
    try:
        status = _STATUS.unpack(_recv_exact(sock, _STATUS.size))[0]
    except OSError:  # ConnectionError included
        print("[rocm-rlhf] the fork server closed the connection before the stage finished", file=sys.stderr,
              flush=True)
        return 1
    finally:
        sock.close()
    return None if status == DECLINED else status


# --- the server -------------------------------------------------------------------------------------------------------

def _recv_exact(conn: socket.socket, n: int) -> bytes:
    """``n`` bytes from ``conn``; ConnectionError if it closes first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("client closed the connection")
        buf += chunk
    return bytes(buf)


class _CurrentStderr:
    """A stream that writes to whatever ``sys.stderr`` is at the time: what a logging handler created in the server
    (transformers', diffusers') gets in a child, so that its records follow the job's redirections into its log, as
    they would in a fresh process that created the handler inside the stage."""

    def write(self, text):
        return sys.stderr.write(text)

    def flush(self):
        sys.stderr.flush()


def _adopt_logging() -> None:
    """In a child: drop the server's own root handlers, and point the libraries' stderr handlers at the job's."""
    import logging as _logging

    root = _logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    loggers = [_logging.getLogger(n) for n in list(_logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if type(handler) is _logging.StreamHandler and handler.stream in (sys.stderr, sys.__stderr__):
                handler.setStream(_CurrentStderr())


def _child(request: dict, fds: list[int], server: int) -> int:
    """In the forked child: become the job's process (its stdout/stderr, directory, environment, import path) and run
    its stage as :func:`rocm_rlhf.infra.jobs.run_stage` does. Returns the exit status, as a fresh process's would be
    (``sys.exit()`` 0, ``sys.exit("message")`` 1 with the message on stderr)."""
    os.setpgid(0, 0)
    _die_with_parent()
    if os.getppid() != server:  # the server died before the line above
        return 1
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # blocked by the server around the fork
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in fds:
        os.close(fd)
    _adopt_logging()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.pop(ENV, None)  # the child runs the stage itself
    sys.path[:] = request["path"]
    tempfile.tempdir = None  # the job's TMPDIR, not one cached by an import in the server
    from types import SimpleNamespace

    from .jobs import Named, run_stage_here

    try:
        module, qualname = request["stage"]
        fn: Any = importlib.import_module(module)
        for part in qualname.split("."):
            fn = getattr(fn, part)
        job = SimpleNamespace(**{k: Named.from_parts(items, names) for k, (items, names) in request["job"].items()},
                              config=request["config"], threads=request["threads"])
        before = {m.partition(".")[0] for m in sys.modules}
        run_stage_here(job, fn, where=f" (pid {os.getpid()}, forked by the fork server {os.getppid()})")
        imported = sorted({m.partition(".")[0] for m in sys.modules} - before)
        if imported and len(job.log):
            with open(job.log[0], "a") as fh:
                fh.write(f"[rocm-rlhf] fork server: the stage imported {', '.join(imported)} itself\n")
        return 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:  # in the job's log already (run_stage_here); on stderr too, as an uncaught exception
        import traceback

        traceback.print_exc()
        return 1


def _die_with_parent() -> None:
    """Linux: SIGTERM to this child when the server dies (a server killed with SIGKILL cannot kill its children, whose
    jobs have been failed already: they must not go on writing outputs)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def preload(modules=PRELOAD) -> dict[str, float]:
    """Import ``modules`` (seconds each; a failed import is logged and skipped)."""
    times = {}
    for name in modules:
        t = time.time()
        try:
            module, _, attribute = name.partition(":")
            loaded = importlib.import_module(module)
            if attribute:
                getattr(loaded, attribute)
            if name == "rocm_rlhf.rewards":
                loaded.available()  # imports the scorers' provider modules
        except Exception as exc:  # the stage will import (or fail) on its own
            log.warning("fork server: preloading %s failed: %s", name, exc)
        times[name] = round(time.time() - t, 2)
    return times


def fork_unsafe() -> str:
    """Why forking this process would break a child's work ('' when it would not): CUDA cannot be used in a child
    forked after its parent initialised it, so a preload that initialised CUDA leaves the jobs to their own
    processes."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "CUDA was initialised while preloading (a forked child could not use it)"
    return ""


def serve(socket_path: str, parent: int | None = None, modules=PRELOAD, poll: float = 0.2) -> None:
    """Preload ``modules``, then fork a child per request on ``socket_path`` until ``parent`` (the workflow's
    process) exits or SIGTERM arrives. No thread of ours (a fork copies only the forking thread): one select loop
    accepts requests, watches clients (a client that goes away gets its child killed) and reaps children."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # torch.cuda.is_available() without initialising CUDA
    # numpy's BLAS pool is sized when it loads, here, not per job: one thread, as the single-threaded jobs ask (each
    # job sets torch's own threads, train.threads / the rule's threads)
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    times = preload(modules)
    log.info("fork server: preloaded %s", times)
    unsafe = fork_unsafe()
    if unsafe:  # no socket: every job runs in its own process, as without the server
        log.warning("fork server: not serving: %s", unsafe)
        return
    Path(socket_path).unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path + ".tmp")
    listener.listen(64)
    os.replace(socket_path + ".tmp", socket_path)  # clients see the path only once it accepts
    children: dict[int, socket.socket] = {}  # pid -> the client waiting for it
    cancelled: set[int] = set()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    # the workflow's process: our parent (then a changed getppid() says it died, zombie or not), or any process
    direct = parent is not None and os.getppid() == parent
    try:
        while not stopping and (parent is None or (os.getppid() == parent if direct else _alive(parent))):
            watched = [c for p, c in children.items() if p not in cancelled]
            readable, _, _ = select.select([listener, *watched], [], [], poll)
            for s in readable:
                if s is listener:
                    _accept(listener, children)
                else:  # a client's socket is readable only when it closed: the job was cancelled
                    pid = next(p for p, c in children.items() if c is s)
                    _kill(pid)
                    cancelled.add(pid)
            for pid in list(children):
                try:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    code = os.waitstatus_to_exitcode(status) if done else None
                except ChildProcessError:  # reaped elsewhere: its status is lost, the job failed
                    done, code = pid, 1
                if done:
                    cancelled.discard(pid)
                    _reply(children.pop(pid), code if code >= 0 else 128 - code)
    finally:
        for pid in children:
            _kill(pid)
        listener.close()
        Path(socket_path).unlink(missing_ok=True)


def _reply(conn: socket.socket, status: int) -> None:
    try:
        conn.sendall(_STATUS.pack(status))
    except OSError:  # the client is gone
        pass
    conn.close()


def _accept(listener: socket.socket, children: dict) -> None:
    """Read one request (within 10 s: a stalled client must not stop the loop) and fork its child; a request that
    cannot be forked is declined (the client runs the stage itself), never fatal to the server."""
    conn, _ = listener.accept()
    fds: list[int] = []
    try:
        conn.settimeout(10)
        if hasattr(socket, "SO_PEERCRED"):  # Linux; elsewhere the private directory alone keeps others out
            cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            uid = struct.unpack("3i", cred)[1]
            if uid != os.getuid():
                raise PermissionError(f"a client of uid {uid}")
        header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 2)
        if len(header) != _HEADER.size or len(fds) != 2:
            raise ConnectionError("malformed request")
        request = pickle.loads(_recv_exact(conn, _HEADER.unpack(header)[0]))
        conn.settimeout(None)
    except Exception as exc:
        log.warning("fork server: declined a request: %s", exc)
        for fd in fds:
            os.close(fd)
        if not isinstance(exc, PermissionError):
            conn.settimeout(1)
            _reply(conn, DECLINED)  # the client runs its job itself
        else:
            conn.close()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    server = os.getpid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # a kill before the child's own handler is pending
    try:
        pid = os.fork()
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        log.warning("fork server: could not fork (%s): the job runs in its own process", exc)
        for fd in fds:
            os.close(fd)
        _reply(conn, DECLINED)
        return
    if pid == 0:
        code = 1
        try:
            conn.close()
            listener.close()
            for c in children.values():
                c.close()
            code = _child(request, fds, server)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            try:
                import atexit

                atexit._run_exitfuncs()  # what a fresh process runs at exit (trackers' flushes, logging.shutdown)
            except BaseException:
                pass
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    for fd in fds:
        os.close(fd)
    children[pid] = conn


def _kill(pid: int) -> None:
    """SIGTERM to a child and whatever it started (each child leads its own process group)."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def start(socket_path: str | None = None, parent: int | None = None, log_path: str | None = None,
          timeout: float = 0.0, modules=None):
    """Start a server process for the workflow whose process is ``parent`` (default: this one), preloading
    ``modules`` (default :data:`PRELOAD`); returns (process, socket path). With ``timeout`` > 0, wait up to that long
    for it to accept (for tests)."""
    import subprocess

    path = socket_path or default_socket_path()
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    out = open(log_path, "a") if log_path else subprocess.DEVNULL
    env = dict(os.environ)  # this package importable as here, also when it is not installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                      env.get("PYTHONPATH")]))
    proc = subprocess.Popen([sys.executable, "-m", "rocm_rlhf.infra.forkserver", path,
                             "--parent", str(parent or os.getpid()),
                             *(["--modules", *modules] if modules is not None else [])],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True)
    if log_path:
        out.close()  # the server has its own copy
    deadline = time.time() + timeout
    while timeout and time.time() < deadline and not os.path.exists(path) and proc.poll() is None:
        time.sleep(0.05)
    return proc, path


def stop(proc, socket_path: str) -> None:
    """Stop a server from :func:`start` (its running children are killed; their jobs fail as cancelled jobs do)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except Exception:
            proc.kill()
    Path(socket_path).unlink(missing_ok=True)
    if Path(socket_path).parent.name.startswith(_PRIVATE_DIR):
        try:
            Path(socket_path).parent.rmdir()
        except OSError:
            pass


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("socket")
    ap.add_argument("--parent", type=int, default=None, help="exit when this process does (the workflow's)")
    ap.add_argument("--modules", nargs="*", default=None, help="modules to preload (default: the stages' imports)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(args.socket, parent=args.parent, modules=PRELOAD if args.modules is None else tuple(args.modules))


if __name__ == "__main__":
    main()
