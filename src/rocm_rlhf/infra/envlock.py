"""Locked conda environments for ``snakemake --sdm conda``: ``envs/<name>.lock.yaml`` from ``envs/<name>.yaml``.

The range files (``envs/torch.yaml``, ``envs/analysis.yaml``) give version ranges and let conda solve afresh. Their
locks pin every package that pip installs: the conda level is only ``python =3.11`` and ``pip``, and everything
else (torch and its CUDA libraries included) comes from PyPI, each package ``==`` one version with the sha256 of
its files, in the yaml's own ``pip:`` section (pip's hash-checking mode then refuses anything unpinned or
altered). The lock is inline, not a ``-r file`` beside the yaml: Snakemake copies the yaml to
``.snakemake/conda/<hash>.yaml`` before ``conda env create`` and conda runs pip from that copy's folder, so a
relative ``-r`` would not be found; and Snakemake's environment hash covers the yaml's text only, so an inline lock
rebuilds the environment whenever it changes. See envs/README.md.

Regenerate (needs the network and ``uv``; ``pip install uv``)::

    python -m rocm_rlhf.infra.envlock            # both locks, at the versions installed in this Python
    python -m rocm_rlhf.infra.envlock --latest   # the newest versions within the ranges instead

The workflow picks the range files or the locks with config key ``conda_envs`` (:func:`conda_env_files`, and
:func:`check_conda_envs` refuses the locks on another platform than theirs).

API: :func:`conda_env_files`, :func:`check_conda_envs`, :func:`range_requirements`, :func:`parse_requirements_txt`,
:func:`read_lock`, :func:`read_lock_text`, :func:`check_lock`, :func:`installed_versions`, :func:`lock_env`,
:func:`main`, :class:`LockedPackage`, :class:`EnvLockError`, ``ENVS_DIR``, ``ENV_NAMES``, ``CONDA_ENV_CHOICES``,
``PYTHON_VERSION``, ``PLATFORM``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ENVS_DIR = Path(__file__).resolve().parents[3] / "envs"
ENV_NAMES = ("torch", "analysis")
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"  # uv's --python-platform: Linux x86_64, glibc >= 2.28 (torch's wheels need it)
#: conda-forge names of the range files -> their PyPI names
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib", "seaborn-base": "seaborn"}
#: conda packages of a range file that stay at the conda level of its lock
CONDA_LEVEL = ("python", "pip")
#: never locked (shared/DESIGN.md: its PyPI builds fail to import beside some torch builds)
FORBIDDEN = ("torchvision",)
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
#: config key ``conda_envs`` -> how the name of a rule's environment file ends (envs/<name><ending>)
CONDA_ENV_CHOICES = {"locked": ".lock.yaml", "ranges": ".yaml"}


class EnvLockError(RuntimeError):
    """A range file or a lock that cannot be read, or a resolution that failed (the message says which and why)."""


@dataclass(frozen=True)
class LockedPackage:
    name: str  # canonical PyPI name
    version: str
    hashes: tuple[str, ...]  # sha256 hex digests of the files pip may install

    def line(self) -> str:
        return f"{self.name}=={self.version} " + " ".join(f"--hash=sha256:{h}" for h in self.hashes)


def conda_env_files(choice: str, prefix: str = "") -> dict[str, str]:
    """The rules' environment files under ``--sdm conda`` for config key ``conda_envs`` (``locked``: the locks,
    ``ranges``: the range files), by environment name; ``prefix`` is the path from the rules' folder to the repo."""
    if choice not in CONDA_ENV_CHOICES:
        raise ValueError(f"config key 'conda_envs' is '{choice}': choose from {', '.join(CONDA_ENV_CHOICES)}")
    return {name: f"{prefix}envs/{name}{CONDA_ENV_CHOICES[choice]}" for name in ENV_NAMES}


def check_conda_envs(choice: str, system: str | None = None, machine: str | None = None) -> None:
    """Refuse the locks where conda would create them for another platform than theirs (Linux x86_64): their
    wheels, torch's CUDA libraries first, exist for it only. Called when a workflow uses ``--sdm conda``."""
    import platform

    from .config import ConfigError

    system, machine = system or platform.system(), machine or platform.machine()
    if choice == "locked" and (system, machine) != ("Linux", "x86_64"):
        raise ConfigError(
            f"config key 'conda_envs' is 'locked' (the default), but the locks in envs/ pin PyPI wheels for Linux "
            f"x86_64 and this machine is {system} {machine}: run with --config conda_envs=ranges (conda solves "
            f"envs/torch.yaml and envs/analysis.yaml for this platform), or create the environments on Linux x86_64")


def range_requirements(path: Path) -> list[Requirement]:
    """The PyPI requirements of a range file (conda packages under their PyPI names, then the pip section), without
    the conda level (python, pip)."""
    path = Path(path)
    if not path.is_file():
        raise EnvLockError(f"environment file {path} does not exist (known: {', '.join(ENV_NAMES)} in {ENVS_DIR})")
    deps = (yaml.safe_load(path.read_text()) or {}).get("dependencies")
    if not isinstance(deps, list):
        raise EnvLockError(f"{path}: no 'dependencies' list")
    out = []
    for dep in deps:
        if isinstance(dep, dict):
            specs = dep.get("pip", [])
        else:
            name, _, spec = str(dep).partition(" ")
            if name in CONDA_LEVEL:
                continue
            specs = [CONDA_TO_PYPI.get(name, name) + spec.replace(" ", "")]
        for spec in specs:
            try:
                out.append(Requirement(spec.split("#")[0].strip()))
            except InvalidRequirement as err:
                raise EnvLockError(f"{path}: '{spec}' is not a version range pip understands ({err})") from None
    bad = [r.name for r in out if canonicalize_name(r.name) in FORBIDDEN]
    if bad:
        raise EnvLockError(f"{path}: {', '.join(bad)} must not be in an environment (see shared/DESIGN.md)")
    return out


def parse_requirements_txt(text: str) -> list[LockedPackage]:
    """The packages of a hashed requirements file as uv or pip-compile write it (``name==version \\`` then one
    ``--hash=sha256:...`` per line), comments and annotations ignored."""
    joined = re.sub(r"\\\s*\n", " ", text)
    out = []
    for raw in joined.splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        req_text = line.split("--hash=")[0].strip()
        try:
            req = Requirement(req_text)
        except InvalidRequirement as err:
            raise EnvLockError(f"cannot read locked requirement '{req_text}': {err}") from None
        pins = [s for s in req.specifier if s.operator == "=="]
        hashes = tuple(_HASH.findall(line))
        if len(pins) != 1 or len(req.specifier) != 1 or not hashes:
            raise EnvLockError(f"'{line[:120]}' is not one pinned version (==) with its --hash=sha256 digests")
        out.append(LockedPackage(canonicalize_name(req.name), pins[0].version, hashes))
    return out


def read_lock(path: Path) -> dict[str, LockedPackage]:
    """The pip packages of a lock file, by canonical name."""
    return read_lock_text(Path(path).read_text(), str(path))


def read_lock_text(text: str, where: str = "lock") -> dict[str, LockedPackage]:
    """The pip packages of a lock file's text, by canonical name."""
    env = yaml.safe_load(text) or {}
    pip = [d["pip"] for d in env.get("dependencies", []) if isinstance(d, dict) and "pip" in d]
    if len(pip) != 1:
        raise EnvLockError(f"{where}: expected one pip section, found {len(pip)}")
    lines = [item for item in pip[0] if not item.startswith("--") or item.startswith("--hash")]
    pkgs = parse_requirements_txt("\n".join(lines))
    return {p.name: p for p in pkgs}


def installed_versions() -> dict[str, str]:
    """The version of every package installed in this Python (local labels such as +cpu dropped: PyPI has none)."""
    return {canonicalize_name(d.metadata["Name"]): Version(d.version).public
            for d in metadata.distributions() if d.metadata["Name"]}


def _uv() -> str:
    uv = shutil.which("uv")
    if uv is None:
        raise EnvLockError("regenerating a lock needs uv (`pip install uv`; it reads the wheels' metadata from PyPI)")
    return uv


def _compile(requirements: list[str], constraints: list[str], exclude_newer: str) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        req, con = Path(tmp) / "requirements.in", Path(tmp) / "constraints.txt"
        req.write_text("\n".join(requirements) + "\n")
        con.write_text("\n".join(constraints) + "\n")
        cmd = [_uv(), "pip", "compile", str(req), "--constraint", str(con), "--python-version", PYTHON_VERSION,
               "--python-platform", PLATFORM, "--generate-hashes", "--only-binary", ":all:", "--no-header",
               "--no-annotate", "--exclude-newer", exclude_newer, "--index-url", "https://pypi.org/simple",
               "--no-config", "--quiet"]
        res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise EnvLockError("uv could not resolve " + ", ".join(requirements) + ":\n" + res.stderr.strip())
    return res.stdout


def lock_env(name: str, latest: bool = False, exclude_newer: str | None = None,
             envs_dir: Path = ENVS_DIR) -> str:
    """The text of ``envs/<name>.lock.yaml``, resolved from ``envs/<name>.yaml`` (network)."""
    if name not in ENV_NAMES:
        raise EnvLockError(f"unknown environment '{name}': choose from {', '.join(ENV_NAMES)}")
    source = Path(envs_dir) / f"{name}.yaml"
    reqs = range_requirements(source)
    exclude_newer = exclude_newer or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    # constraints apply only to the packages the resolution needs; the others installed here are ignored
    constraints = [] if latest else [f"{n}=={v}" for n, v in sorted(installed_versions().items())]
    pkgs = parse_requirements_txt(_compile([str(r) for r in reqs], constraints, exclude_newer))
    check_lock(pkgs, reqs, source)
    channels = yaml.safe_load(source.read_text()).get("channels", ["conda-forge", "nodefaults"])
    how = "the newest versions within its ranges" if latest else "the versions installed where it was made"
    flag = " --latest" if latest else ""
    lines = [
        f"# GENERATED from envs/{name}.yaml by `python -m rocm_rlhf.infra.envlock {name}{flag}`"
        " (envs/README.md); do not edit by hand.",
        "# PyPI level: every package pinned (==) with the sha256 of its files (pip's hash-checking mode), resolved by",
        f"# uv for CPython {PYTHON_VERSION} on {PLATFORM} at {how},",
        f"# from PyPI files uploaded before {exclude_newer} (--exclude-newer).",
        "# Conda level: python 3.11 and pip from conda-forge, NOT pinned to builds (conda-forge was out of reach where",
        "# the locks were made: no explicit file with URLs and md5s); the wheels are cp311, for any Python 3.11.",
    ]
    if any(p.name == "torch" for p in pkgs):
        cuda = sum(p.name.startswith(("nvidia-", "cuda-")) for p in pkgs)
        lines += [f"# torch from PyPI is its CUDA build for Linux x86_64 ({cuda} CUDA packages pinned below). It runs",
                  "# on CPUs too, and on GPUs whose driver supports its CUDA (rule check_device stops a cuda config if",
                  "# not)."]
    pip = ["--only-binary=:all:"] + [p.line() for p in pkgs]  # wheels only: pip never builds anything
    body = {"channels": channels, "dependencies": ["python =3.11", "pip", {"pip": pip}]}
    return "\n".join(lines) + "\n" + yaml.safe_dump(body, sort_keys=False, width=100_000)


def check_lock(pkgs: list[LockedPackage], reqs: list[Requirement], source: Path) -> None:
    """Every requirement of the range file is locked at a version inside its range; nothing forbidden is locked."""
    by_name = {p.name: p for p in pkgs}
    problems = []
    for req in reqs:
        p = by_name.get(canonicalize_name(req.name))
        if p is None:
            problems.append(f"{req.name} is not locked")
        elif not req.specifier.contains(p.version, prereleases=True):
            problems.append(f"{req.name}=={p.version} is outside {source.name}'s range '{req.specifier}'")
    problems += [f"{n} is locked but must not be (shared/DESIGN.md)" for n in FORBIDDEN if n in by_name]
    if problems:
        raise EnvLockError(f"lock of {source}: " + "; ".join(problems))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rocm_rlhf.infra.envlock", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=list(ENV_NAMES),
                        help=f"environments to lock ({', '.join(ENV_NAMES)})")
    parser.add_argument("--latest", action="store_true",
                        help="the newest versions within the ranges, not those installed in this Python")
    parser.add_argument("--exclude-newer", help="only PyPI files uploaded before this RFC 3339 time (the header of a "
                                                "lock records the one it used, to reproduce it)")
    parser.add_argument("--envs-dir", type=Path, default=ENVS_DIR, help="folder of the range files and locks")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a committed lock differs from a fresh resolution (give --exclude-newer)")
    args = parser.parse_args(argv)
    status = 0
    try:
        for name in args.names:
            text = lock_env(name, latest=args.latest, exclude_newer=args.exclude_newer, envs_dir=args.envs_dir)
            path = args.envs_dir / f"{name}.lock.yaml"
            n = len(read_lock_text(text))
            if args.check:
                same = path.is_file() and read_lock(path) == read_lock_text(text)
                print(f"{path}: {'up to date' if same else 'DIFFERS from a fresh resolution'} ({n} packages)")
                status |= not same
            else:
                path.write_text(text)
                print(f"wrote {path} ({n} packages pinned)")
    except EnvLockError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
