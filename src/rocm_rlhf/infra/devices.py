"""GPU assignment for local multi-GPU runs: one free device per training job, by file lock.

Snakemake's ``--resources gpu=N`` only caps how many GPU jobs run at once and assigns no ids, so each GPU job locks a
free device itself, before any ``torch.cuda`` call: ``with acquire_gpu() as gpu:`` makes the locked device the only
visible one (``cuda:0``) for the block, and ``acquire_gpus(N)`` locks N at once (all or none) for a multi-device run.
API: :func:`acquire_gpu`, :func:`acquire_gpus`, :func:`candidate_gpus`, :func:`count_gpus_nvidia_smi`,
:func:`default_lock_dir`, :class:`GpuLockTimeout`, :class:`DeviceLockError`, ``LOCK_DIR_ENV``, ``NUM_GPUS_ENV``.
The candidates, the locks and when no lock is taken: docs/method.md, section 'Infrastructure notes' (GPU locks).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "ROCM_RLHF_LOCK_DIR"
NUM_GPUS_ENV = "ROCM_RLHF_NUM_GPUS"
DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_POLL_S = 2.0

DeviceId = int | str


class GpuLockTimeout(TimeoutError):
    """No candidate GPU became free within the timeout."""


class DeviceLockError(RuntimeError):
    """A lock file that is not ours to write (a symbolic link or not a regular file)."""


def _parse_visible(value: str) -> list[DeviceId]:
    """Entries of a CUDA_VISIBLE_DEVICES value: ints for indices, strings for UUIDs ('' -> [])."""
    out: list[DeviceId] = []
    for item in value.split(","):
        item = item.strip()
        if item:
            out.append(int(item) if item.isdigit() else item)
    return out


def count_gpus_nvidia_smi() -> int:
    """Number of GPUs listed by ``nvidia-smi -L`` (lines ``GPU <i>: ...``); 0 if it is absent or fails.

    Does not touch CUDA in this process. MIG slices are not counted separately: list their UUIDs in
    ``CUDA_VISIBLE_DEVICES`` to share them by lock.
    """
    try:
        res = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, PermissionError, subprocess.TimeoutExpired):
        return 0
    if res.returncode != 0:
        log.warning("nvidia-smi -L failed (exit %d): %s; assuming no GPU", res.returncode, res.stderr.strip())
        return 0
    return sum(1 for line in res.stdout.splitlines() if re.match(r"^GPU \d+:", line))


def _num_gpus_from_env() -> int | None:
    raw = os.environ.get(NUM_GPUS_ENV)
    if raw is None or raw.strip() == "":
        return None
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"{NUM_GPUS_ENV}={raw!r} is not a number of GPUs: set it to an integer >= 0 or unset it")
    return n


def candidate_gpus(n_gpus: int | None = None) -> list[DeviceId]:
    """The devices ``acquire_gpu`` chooses among, in the order it tries them (docs/method.md,
    section 'Infrastructure notes').

    An empty list means: take no lock (no GPU, a single pinned device, or a Slurm job without GPU).
    """
    if n_gpus is not None and (isinstance(n_gpus, bool) or not isinstance(n_gpus, int) or n_gpus < 0):
        raise ValueError(f"n_gpus must be an integer >= 0 or None (detect), got {n_gpus!r}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = _parse_visible(visible)
        if len(ids) <= 1:
            return []
        if n_gpus is not None and n_gpus != len(ids):
            raise ValueError(
                f"n_gpus={n_gpus} contradicts CUDA_VISIBLE_DEVICES={visible!r} ({len(ids)} devices): "
                "pass n_gpus=None to share the listed devices, or unset CUDA_VISIBLE_DEVICES"
            )
        return ids
    if "SLURM_JOB_ID" in os.environ:
        return []
    if n_gpus is None:
        n_gpus = _num_gpus_from_env()
    if n_gpus is None:
        n_gpus = count_gpus_nvidia_smi()
    return list(range(n_gpus))


def default_lock_dir() -> Path:
    """``$ROCM_RLHF_LOCK_DIR`` or ``<tempdir>/rocm_rlhf_gpu_locks``; inside a Slurm job ``.../slurm-<job id>``."""
    base = Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "rocm_rlhf_gpu_locks")
    job = os.environ.get("SLURM_JOB_ID")
    return base / f"slurm-{job}" if job else base


def _lock_path(lock_dir: Path, dev: DeviceId) -> Path:
    return lock_dir / f"gpu{re.sub(r'[^A-Za-z0-9_.-]', '_', str(dev))}.lock"


def _make_lock_dir(lock_dir: Path) -> None:
    """Create the lock folder shared by all users of the machine (sticky and world-writable, as /tmp). An existing one
    must be a real folder, and sticky if others can write to it (so that nobody can replace our lock files)."""
    import stat

    if lock_dir.is_symlink():
        raise DeviceLockError(f"GPU lock folder {lock_dir} is a symbolic link, which is refused; remove it, or set "
                              f"{LOCK_DIR_ENV} to a private folder")
    if lock_dir.is_dir():
        mode = lock_dir.stat().st_mode
        if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
            raise DeviceLockError(f"GPU lock folder {lock_dir} is world-writable without the sticky bit, so anyone "
                                  f"could replace its lock files; chmod 1777 it, or set {LOCK_DIR_ENV} to a private "
                                  f"folder")
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(lock_dir, 0o1777)
    except PermissionError:  # created concurrently by another user: theirs is fine
        pass


def _open_lock_file(path: Path) -> int:
    """Open (creating) a lock file without following a symbolic link: in a shared, world-writable folder a planted
    ``gpu0.lock -> ~victim/file`` would otherwise have its target truncated and overwritten with our pid."""
    flags = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o666)
        except PermissionError:  # another user's lock file: flock works on a read-only descriptor too
            return _regular(os.open(path, os.O_RDONLY | flags), path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise DeviceLockError(f"GPU lock file {path} is a symbolic link, which is refused (it could redirect our "
                                  f"writes to its target); remove it, or set {LOCK_DIR_ENV} to a private folder") from err
        raise
    fd = _regular(fd, path)
    try:
        os.fchmod(fd, 0o666)
    except PermissionError:
        pass
    return fd


def _regular(fd: int, path: Path) -> int:
    """``fd`` if it is a regular file (not a fifo or device planted under the lock's name), else an error."""
    import stat

    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DeviceLockError(f"GPU lock file {path} is not a regular file; remove it, or set {LOCK_DIR_ENV} to a "
                              f"private folder")
    return fd


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive flock on ``path``, or None if another process holds it."""
    fd = _open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    try:  # record the holder for the timeout message (best effort: read-only for other users' files)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
    return fd


def _holder(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            pid = os.read(fd, 64).decode(errors="replace").strip()
        finally:
            os.close(fd)
    except OSError:
        pid = ""
    return f"pid {pid}" if pid else "unknown process"


def _cuda_already_initialised() -> bool:
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        return bool(torch.cuda.is_initialized())
    except Exception:  # a torch build without cuda module state
        return False


@contextmanager
def acquire_gpu(
    n_gpus: int | None = None,
    lock_dir: str | os.PathLike | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = DEFAULT_POLL_S,
) -> Iterator[DeviceId | None]:
    """Lock one free GPU for the duration of the block and make it this process's only visible device.

    Yields the locked device id as it appears in ``CUDA_VISIBLE_DEVICES`` (an int index, or a UUID string), or
    None when no lock was taken (no GPU, a single device already pinned, or a Slurm job: see docs/method.md,
    section 'Infrastructure notes'). In every case the job then uses the default CUDA device (``cuda:0``) if
    ``torch.cuda.is_available()``, else the CPU. The arguments are those of :func:`acquire_gpus`.
    """
    with acquire_gpus(1, n_gpus=n_gpus, lock_dir=lock_dir, timeout_s=timeout_s, poll_s=poll_s) as ids:
        yield ids[0] if ids else None


@contextmanager
def acquire_gpus(
    count: int = 1,
    n_gpus: int | None = None,
    lock_dir: str | os.PathLike | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = DEFAULT_POLL_S,
) -> Iterator[list[DeviceId] | None]:
    """Lock ``count`` free GPUs for the duration of the block and make them this process's visible devices (in
    the order of the candidates), for a job that runs on several devices (``train.num_processes``).

    Yields the locked ids, or None when no lock was taken (as :func:`acquire_gpu`). The devices are taken all at
    once or not at all: while fewer than ``count`` are free, none is held, so two multi-device jobs never deadlock
    holding one device each.

    count: devices the job needs (>= 1); more than the candidates is an error, as is ``count > 1`` when
        ``CUDA_VISIBLE_DEVICES`` pins a single device.
    n_gpus: number of devices (ids 0..n_gpus-1) when ``CUDA_VISIBLE_DEVICES`` is unset; None detects it.
    lock_dir: folder of the lock files (default ``default_lock_dir()``), on a local file system.
    timeout_s: give up with ``GpuLockTimeout`` after this many seconds without enough free devices.
    poll_s: seconds between attempts while too few devices are free.

    Raises RuntimeError if torch has already initialised CUDA (call this before any ``torch.cuda`` call).
    """
    if timeout_s < 0 or poll_s <= 0:
        raise ValueError(f"timeout_s must be >= 0 and poll_s > 0, got timeout_s={timeout_s}, poll_s={poll_s}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an integer >= 1, got {count!r}")
    candidates = candidate_gpus(n_gpus)
    pinned = _parse_visible(os.environ.get("CUDA_VISIBLE_DEVICES") or "")
    if count > 1 and len(pinned) == 1:
        raise ValueError(
            f"this job needs {count} GPUs but CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} makes "
            f"one visible: list {count} devices there (or unset it), or set train.num_processes to 1"
        )
    if not candidates:
        log.info(
            "acquire_gpus: no lock taken (CUDA_VISIBLE_DEVICES=%r, SLURM_JOB_ID=%r)",
            os.environ.get("CUDA_VISIBLE_DEVICES"),
            os.environ.get("SLURM_JOB_ID"),
        )
        yield None
        return
    if count > len(candidates):
        raise ValueError(
            f"this job needs {count} GPUs but only {len(candidates)} exist here ({candidates}): set "
            f"train.num_processes to at most {len(candidates)}"
        )
    if _cuda_already_initialised():
        raise RuntimeError(
            "acquire_gpu() was called after torch initialised CUDA, so setting CUDA_VISIBLE_DEVICES can no "
            "longer choose the device and jobs would share one GPU: call acquire_gpu() before any torch.cuda "
            "call (including moving a model to 'cuda')"
        )
    ldir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    _make_lock_dir(ldir)

    deadline = time.monotonic() + timeout_s
    held: list[tuple[DeviceId, int]] = []
    while True:
        for dev in candidates:
            fd = _try_lock(_lock_path(ldir, dev))
            if fd is not None:
                held.append((dev, fd))
                if len(held) == count:
                    break
        if len(held) == count:
            break
        for _, fd in held:  # all or nothing: hold no device while waiting
            os.close(fd)
        held = []
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            holders = ", ".join(f"gpu {d}: {_holder(_lock_path(ldir, d))}" for d in candidates)
            need = "no free GPU" if count == 1 else f"fewer than {count} free GPUs"
            raise GpuLockTimeout(
                f"{need} among {candidates} after {timeout_s:g} s: the others are locked by other jobs ({holders}; "
                f"lock files in {ldir}). Run Snakemake with --resources gpu=N where N is at most the number of "
                f"GPUs ({len(candidates)}), or raise timeout_s"
            )
        time.sleep(min(poll_s, remaining))

    chosen = [dev for dev, _ in held]
    saved = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in chosen)
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    log.info("acquire_gpus: using GPU %s (locks in %s)", chosen, ldir)
    try:
        yield chosen
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for _, fd in held:
            os.close(fd)  # releases the flocks


def threads_per_gpu_process(threads: int | str, cores: int, gpus: int | None) -> int:
    """CPU threads of each process of a GPU job (``train.threads``): a number as given; ``"auto"``: the cores shared
    evenly by the GPUs the run may use at once, ``cores // gpus`` (at least 1), so that ``--cores 8 --resources gpu=2``
    runs two one-GPU jobs of 4 threads side by side. ``gpus`` None (no ``--resources gpu`` cap) counts as one GPU."""
    if threads != "auto":
        return max(1, int(threads))
    return max(1, int(cores) // max(1, int(gpus or 1)))


class DeviceCheckError(RuntimeError):
    """The config asks for CUDA and this machine's torch cannot give it (the preflight of ``check_device``)."""


def check_device(device: str, bf16: bool = False) -> dict:
    """The preflight of a config's ``device``, run once before any GPU job (rule ``check_device``), in the jobs' own
    environment: for ``cuda``, torch must be a CUDA build, see a usable device and, where the config computes in
    bfloat16 (``bf16``), support it. Returns what it found (torch version, CUDA build, devices); raises
    :class:`DeviceCheckError` naming what is missing and how to fix it. ``auto`` and ``cpu`` only report."""
    import torch

    found = {"device": device, "torch": torch.__version__, "cuda_build": torch.version.cuda,
             "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "devices": []}
    if device != "cuda":
        return found
    if torch.version.cuda is None:
        raise DeviceCheckError(
            f"config key 'device' is 'cuda' but this environment's torch {torch.__version__} is a CPU-only build "
            f"({sys.executable}): install a CUDA build (pip: `pip install torch --index-url "
            f"https://download.pytorch.org/whl/cu126`, before the rest; --sdm conda: the default conda_envs: locked "
            f"installs PyPI's CUDA build, with conda_envs: ranges create envs/torch.yaml on a GPU node, or with "
            f"CONDA_OVERRIDE_CUDA=12.6 where there is none; envs/README.md), or set device: cpu for a toy run")
    from .utils import pick_device

    try:
        pick_device("cuda")
    except RuntimeError as err:
        raise DeviceCheckError(
            f"{err}. If this node has a GPU, its NVIDIA driver may be older than torch's CUDA {torch.version.cuda} "
            f"(nvidia-smi shows the newest CUDA the driver supports): update the driver, or install a torch built "
            f"for an older CUDA (--sdm conda: --config conda_envs=ranges lets conda-forge pick one the driver "
            f"supports; envs/README.md)") from None
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        found["devices"].append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 2**30, 1),
                                 "capability": f"{p.major}.{p.minor}"})
    if bf16 and not torch.cuda.is_bf16_supported():
        raise DeviceCheckError(
            f"the config computes in bfloat16 (train.mixed_precision: bf16 or model.dtype: bfloat16) but "
            f"{found['devices'][0]['name']} does not support it: set train.mixed_precision: 'no' and model.dtype: "
            f"float32 in a config of your own, or use a GPU of compute capability 8.0 or newer")
    return found
