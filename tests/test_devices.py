"""rocm_rlhf.infra.devices: GPU assignment by file lock, tested with fake GPU counts in real concurrent processes."""

import fcntl
import os
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

from rocm_rlhf.infra import devices
from rocm_rlhf.infra.devices import GpuLockTimeout, acquire_gpu, candidate_gpus

# A worker process: lock a GPU, report the id, its CUDA_VISIBLE_DEVICES and a grandchild's, hold until released.
WORKER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from pathlib import Path
    from rocm_rlhf.infra.devices import acquire_gpu
    d, name = Path(sys.argv[1]), sys.argv[2]
    (d / f"{name}.started").write_text("")
    with acquire_gpu(timeout_s=float(sys.argv[3]), poll_s=0.02) as gpu:
        child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"],
                               capture_output=True, text=True, check=True).stdout.strip()
        (d / f"{name}.tmp").write_text(f"{gpu} {os.environ['CUDA_VISIBLE_DEVICES']} {child}")
        os.replace(d / f"{name}.tmp", d / f"{name}.acquired")
        while not (d / f"{name}.release").exists():
            time.sleep(0.01)
    """
)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A clean environment with 2 fake GPUs and a private lock folder; returns the folder."""
    for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "SLURM_JOB_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ROCM_RLHF_NUM_GPUS", "2")
    lock_dir = tmp_path / "locks"
    monkeypatch.setenv("ROCM_RLHF_LOCK_DIR", str(lock_dir))
    return lock_dir


def _start(tmp_path, name, timeout_s=30.0):
    return subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), name, str(timeout_s)],
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc, timeout=20.0):
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode}: {proc.stderr.read()}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.01)
    return path.read_text().split()


def _finish(tmp_path, name, proc):
    (tmp_path / f"{name}.release").write_text("")
    assert proc.wait(timeout=20) == 0, proc.stderr.read()


def _hold(lock_dir: Path, dev) -> int:
    """Hold the lock of device ``dev`` from this process (a separate open file description conflicts)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"gpu{dev}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _is_free(lock_dir: Path, dev) -> bool:
    fd = os.open(lock_dir / f"gpu{dev}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_concurrent_processes_get_distinct_gpus_and_a_third_waits(env, tmp_path):
    a, b = _start(tmp_path, "a"), _start(tmp_path, "b")
    ga, gb = _wait_for(tmp_path / "a.acquired", a), _wait_for(tmp_path / "b.acquired", b)
    # both hold their lock at the same time (neither has been released): ids differ and cover both GPUs
    assert {ga[0], gb[0]} == {"0", "1"}
    # CUDA_VISIBLE_DEVICES is the locked id, in the worker and in the worker's own child process
    assert ga == [ga[0]] * 3 and gb == [gb[0]] * 3

    c = _start(tmp_path, "c")
    _wait_for(tmp_path / "c.started", c)
    time.sleep(0.6)  # 30 polls: c must still be waiting, both GPUs are taken
    assert not (tmp_path / "c.acquired").exists() and c.poll() is None
    _finish(tmp_path, "a", a)  # frees GPU ga[0]
    gc = _wait_for(tmp_path / "c.acquired", c)
    assert gc == [ga[0]] * 3
    _finish(tmp_path, "b", b)
    _finish(tmp_path, "c", c)
    assert _is_free(env, 0) and _is_free(env, 1)


def test_lock_released_when_the_process_is_killed(env, tmp_path):
    a = _start(tmp_path, "a")
    gpu = _wait_for(tmp_path / "a.acquired", a)[0]
    assert not _is_free(env, gpu)
    a.kill()
    a.wait(timeout=20)
    assert _is_free(env, gpu)


def test_timeout_names_devices_holders_and_remedy(env):
    fds = [_hold(env, 0), _hold(env, 1)]
    try:
        t0 = time.monotonic()
        with pytest.raises(GpuLockTimeout) as err:
            with acquire_gpu(timeout_s=0.3, poll_s=0.05):
                pass
        assert time.monotonic() - t0 >= 0.3
        msg = str(err.value)
        assert "no free GPU among [0, 1] after 0.3 s" in msg
        assert f"gpu 0: pid {os.getpid()}" in msg and f"gpu 1: pid {os.getpid()}" in msg
        assert "--resources gpu=N" in msg and str(env) in msg
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    finally:
        for fd in fds:
            os.close(fd)


def test_takes_the_first_free_device_sets_and_restores_env(env):
    fd = _hold(env, 0)
    try:
        with acquire_gpu(timeout_s=1, poll_s=0.05) as gpu:
            assert gpu == 1
            assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
            assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
            assert not _is_free(env, 1)
    finally:
        os.close(fd)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ and "CUDA_DEVICE_ORDER" not in os.environ
    assert _is_free(env, 1)


def test_lock_released_on_exception(env):
    with pytest.raises(KeyError):
        with acquire_gpu(timeout_s=1) as gpu:
            assert gpu == 0 and not _is_free(env, 0)
            raise KeyError("boom")
    assert _is_free(env, 0)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_visible_device_list_is_the_pool(env, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    fd = _hold(env, 2)
    try:
        with acquire_gpu(timeout_s=1, poll_s=0.05) as gpu:
            assert gpu == 5 and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    finally:
        os.close(fd)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,5"
    with pytest.raises(ValueError, match=r"n_gpus=4 contradicts CUDA_VISIBLE_DEVICES='2,5'"):
        with acquire_gpu(n_gpus=4):
            pass


@pytest.mark.parametrize(
    "extra",
    [
        {"SLURM_JOB_ID": "123"},  # Slurm job without a GPU binding: do not grab the node's GPUs
        {"SLURM_JOB_ID": "123", "CUDA_VISIBLE_DEVICES": "3"},  # Slurm bound one GPU
        {"CUDA_VISIBLE_DEVICES": "1"},  # pinned by the user
        {"CUDA_VISIBLE_DEVICES": ""},  # no GPU visible
    ],
)
def test_no_lock_when_bound_pinned_or_hidden(env, monkeypatch, extra):
    for k, v in extra.items():
        monkeypatch.setenv(k, v)
    with acquire_gpu(timeout_s=0) as gpu:
        assert gpu is None
        assert os.environ.get("CUDA_VISIBLE_DEVICES") == extra.get("CUDA_VISIBLE_DEVICES")
        assert "CUDA_DEVICE_ORDER" not in os.environ
    assert not env.exists()  # no lock folder, no lock file


def test_slurm_allocation_with_several_gpus_shares_them_in_a_per_job_folder(env, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with acquire_gpu(timeout_s=0) as gpu:
        assert gpu == 0
        assert (env / "slurm-77" / "gpu0.lock").exists()


def test_cpu_only_machine_yields_none(env, monkeypatch, tmp_path):
    monkeypatch.delenv("ROCM_RLHF_NUM_GPUS")
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no nvidia-smi
    assert devices.count_gpus_nvidia_smi() == 0
    with acquire_gpu(timeout_s=0) as gpu:
        assert gpu is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv("ROCM_RLHF_NUM_GPUS", "0")
    with acquire_gpu(timeout_s=0) as gpu:
        assert gpu is None


def test_counts_gpus_from_nvidia_smi(env, monkeypatch, tmp_path):
    monkeypatch.delenv("ROCM_RLHF_NUM_GPUS")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text(
        "#!/bin/sh\n"
        'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)"\n'
        'echo "  MIG 3g.40gb     Device  0: (UUID: MIG-bbbb)"\n'
        'echo "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-cccc)"\n'
        'echo "GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-dddd)"\n'
    )
    (fake / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    assert candidate_gpus() == [0, 1, 2]
    assert candidate_gpus(n_gpus=1) == [0]  # an explicit count wins over detection


def test_bad_gpu_count_is_one_clear_error(env, monkeypatch):
    monkeypatch.setenv("ROCM_RLHF_NUM_GPUS", "two")
    with pytest.raises(ValueError, match="ROCM_RLHF_NUM_GPUS='two' is not a number of GPUs"):
        with acquire_gpu():
            pass
    with pytest.raises(ValueError, match="n_gpus must be an integer >= 0"):
        candidate_gpus(n_gpus=-1)


def test_refuses_after_cuda_was_initialised(env, monkeypatch):
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_initialized=lambda: True))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    with pytest.raises(RuntimeError, match="before any torch.cuda call"):
        with acquire_gpu(timeout_s=0):
            pass
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    # not initialised: fine
    fake_torch.cuda.is_initialized = lambda: False
    with acquire_gpu(timeout_s=0) as gpu:
        assert gpu == 0


# ---- several devices for one job (train.num_processes) -------------------------------------------------------------

WORKER_N = WORKER.replace("from rocm_rlhf.infra.devices import acquire_gpu", "from rocm_rlhf.infra.devices import acquire_gpus") \
    .replace("with acquire_gpu(timeout_s=float(sys.argv[3]), poll_s=0.02) as gpu:",
             "with acquire_gpus(int(sys.argv[4]), timeout_s=float(sys.argv[3]), poll_s=0.02) as ids:\n"
             "    gpu = ','.join(map(str, ids))")


def _start_n(tmp_path, name, count, timeout_s=30.0):
    return subprocess.Popen([sys.executable, "-c", WORKER_N, str(tmp_path), name, str(timeout_s), str(count)],
                            stderr=subprocess.PIPE, text=True)


def test_two_device_jobs_never_share_and_the_waiting_one_holds_nothing(env, tmp_path, monkeypatch):
    monkeypatch.setenv("ROCM_RLHF_NUM_GPUS", "3")
    a = _start_n(tmp_path, "a", 2)
    ga = _wait_for(tmp_path / "a.acquired", a)
    assert ga == ["0,1"] * 3  # both ids, visible to the job and to its children (the accelerate workers)
    b = _start_n(tmp_path, "b", 2)
    _wait_for(tmp_path / "b.started", b)
    time.sleep(0.6)  # one device is free, two are needed: b waits, and holds none while it waits
    assert not (tmp_path / "b.acquired").exists() and b.poll() is None
    assert _is_free(env, 2)
    c = _start(tmp_path, "c")  # a one-device job is not starved by the waiting two-device job
    assert _wait_for(tmp_path / "c.acquired", c) == ["2"] * 3
    _finish(tmp_path, "a", a)
    assert _wait_for(tmp_path / "b.acquired", b) == ["0,1"] * 3
    _finish(tmp_path, "b", b)
    _finish(tmp_path, "c", c)
    assert all(_is_free(env, d) for d in range(3))


def test_takes_the_free_devices_among_held_ones(env, monkeypatch):
    monkeypatch.setenv("ROCM_RLHF_NUM_GPUS", "4")
    fd = _hold(env, 1)
    try:
        with devices.acquire_gpus(2, timeout_s=1, poll_s=0.05) as ids:
            assert ids == [0, 2] and os.environ["CUDA_VISIBLE_DEVICES"] == "0,2"
            assert not _is_free(env, 0) and not _is_free(env, 2) and _is_free(env, 3)
    finally:
        os.close(fd)
    assert all(_is_free(env, d) for d in range(4)) and "CUDA_VISIBLE_DEVICES" not in os.environ


def test_timeout_for_several_devices_releases_the_partial_set(env):
    fd = _hold(env, 0)
    try:
        with pytest.raises(GpuLockTimeout, match=r"fewer than 2 free GPUs among \[0, 1\] after 0.2 s"):
            with devices.acquire_gpus(2, timeout_s=0.2, poll_s=0.05):
                pass
        assert _is_free(env, 1)
    finally:
        os.close(fd)


def test_impossible_device_counts_are_clear_errors(env, monkeypatch):
    with pytest.raises(ValueError, match="needs 3 GPUs but only 2 exist here .* train.num_processes to at most 2"):
        with devices.acquire_gpus(3, timeout_s=0):
            pass
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with pytest.raises(ValueError, match="needs 2 GPUs but CUDA_VISIBLE_DEVICES='1' makes one visible"):
        with devices.acquire_gpus(2, timeout_s=0):
            pass
    with pytest.raises(ValueError, match="count must be an integer >= 1"):
        with devices.acquire_gpus(0):
            pass


def test_a_planted_symlink_lock_is_refused_and_its_target_untouched(env, tmp_path):
    """The lock folder is shared and world-writable: a gpu0.lock symlink must not make us truncate and overwrite its
    target (the old code wrote our pid into it)."""
    from rocm_rlhf.infra.devices import DeviceLockError

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    env.mkdir(parents=True, exist_ok=True)
    (env / "gpu0.lock").symlink_to(victim)
    with pytest.raises(DeviceLockError, match="gpu0.lock is a symbolic link"):
        with acquire_gpu(timeout_s=1, poll_s=0.05):
            pass
    assert victim.read_text() == "precious\n"


def test_a_fifo_under_the_lock_name_is_refused(env):
    from rocm_rlhf.infra.devices import DeviceLockError

    env.mkdir(parents=True, exist_ok=True)
    os.mkfifo(env / "gpu0.lock")
    with pytest.raises(DeviceLockError, match="not a regular file"):
        with acquire_gpu(timeout_s=1, poll_s=0.05):
            pass


def test_an_unsafe_lock_folder_is_refused(env, tmp_path):
    from rocm_rlhf.infra.devices import DeviceLockError

    real = tmp_path / "elsewhere"
    real.mkdir()
    env.parent.mkdir(parents=True, exist_ok=True)
    env.symlink_to(real)
    with pytest.raises(DeviceLockError, match="lock folder .* is a symbolic link"):
        with acquire_gpu(timeout_s=1, poll_s=0.05):
            pass
    env.unlink()
    env.mkdir()
    os.chmod(env, 0o777)
    with pytest.raises(DeviceLockError, match="world-writable without the sticky bit"):
        with acquire_gpu(timeout_s=1, poll_s=0.05):
            pass
    os.chmod(env, 0o1777)
    with acquire_gpu(timeout_s=1, poll_s=0.05):
        pass


def test_threads_per_gpu_process_shares_the_cores_among_the_gpus():
    from rocm_rlhf.infra.devices import threads_per_gpu_process

    assert threads_per_gpu_process("auto", 8, 2) == 4  # --cores 8 --resources gpu=2: two jobs of 4 threads
    assert threads_per_gpu_process("auto", 16, 2) == 8
    assert threads_per_gpu_process("auto", 8, None) == 8  # no GPU cap: one GPU's share is every core
    assert threads_per_gpu_process("auto", 1, 4) == 1  # never 0
    assert threads_per_gpu_process(3, 8, 2) == 3  # a number is taken as given


def test_check_device_names_a_cpu_only_build_and_a_missing_bf16(monkeypatch):
    import torch

    from rocm_rlhf.infra import devices

    assert devices.check_device("cpu")["devices"] == []
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(devices.DeviceCheckError, match="CPU-only build.*install a CUDA build.*device: cpu"):
        devices.check_device("cuda")
    monkeypatch.setattr(torch.version, "cuda", "13.0")  # a CUDA build that sees no device (e.g. an older driver)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(devices.DeviceCheckError, match="no CUDA device.*driver may be older than torch's CUDA 13.0.*"
                                                       "conda_envs=ranges"):
        devices.check_device("cuda")
    monkeypatch.setattr(torch.version, "cuda", "12.6")  # a CUDA build that sees a GPU without bfloat16 (a V100)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    props = type("P", (), {"name": "Tesla V100", "total_memory": 32 * 2**30, "major": 7, "minor": 0})()
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert devices.check_device("cuda")["devices"][0]["name"] == "Tesla V100"
    with pytest.raises(devices.DeviceCheckError, match="Tesla V100 does not support it"):
        devices.check_device("cuda", bf16=True)
