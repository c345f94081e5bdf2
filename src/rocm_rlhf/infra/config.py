"""Configuration: validation against workflow/schemas/config.schema.yaml with defaults filled in.

Snakemake's common.smk calls :func:`validate_config` before any job is scheduled, so bad input fails at once with
one message naming every offending key (as a dotted path) and what is wrong with it.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The configuration does not match the schema."""


def load_schema(path: str | Path | None = None) -> dict:
    """The config schema, with the catalogue's names (rocm_rlhf.runs) as the choices of the keys that name
    divergences, baselines and score-function methods, so that the names are defined once."""
    from ..runs import BASELINES, DIVERGENCES, SCORE_FUNCTION_METHODS

    with open(path or SCHEMA_PATH) as fh:
        schema = yaml.safe_load(fh)
    props = schema["properties"]
    for block, key, names in (("rocm", "divergences", DIVERGENCES), ("baselines", "methods", BASELINES)):
        prop = props[block]["properties"][key]
        prop["items"] = {"enum": list(names)}
        prop["default"] = list(names)
    sf = props["score_function"]["properties"]
    sf["methods"]["items"] = {"enum": list(SCORE_FUNCTION_METHODS)}  # none by default
    sf["divergence"]["enum"] = list(DIVERGENCES)
    return schema


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    # integers are whole numbers written as such (4.0 from YAML is not a step count) and numbers are finite (.nan and
    # .inf pass every minimum check)
    checker = validator_class.TYPE_CHECKER.redefine_many({
        "integer": lambda _, x: isinstance(x, int) and not isinstance(x, bool),
        "number": lambda _, x: isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x),
    })
    return jsonschema.validators.extend(validator_class, {"properties": set_defaults}, type_checker=checker)


def _path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def validate_config(config: dict, schema: dict | str | Path | None = None) -> dict:
    """Fill defaults into ``config`` (in place) and validate it; raise :class:`ConfigError` listing every problem."""
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    validator = _with_defaults(jsonschema.Draft7Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = []
        for e in errors:
            if e.validator == "additionalProperties":
                allowed = sorted(e.schema.get("properties", {}))
                hint = f" (allowed keys: {', '.join(allowed)})" if allowed else ""
                lines.append(f"config key '{_path(e)}': {e.message}{hint}")
            elif e.validator == "type" and isinstance(e.instance, float) and not math.isfinite(e.instance):
                lines.append(f"config key '{_path(e)}': {e.instance} is not a finite number")
            elif e.validator == "type" and isinstance(e.instance, float) and e.validator_value == "integer":
                lines.append(f"config key '{_path(e)}': {e.instance} is not a whole number: write {int(e.instance)}"
                             if e.instance.is_integer() else f"config key '{_path(e)}': {e.message}")
            elif e.validator == "type" and isinstance(e.instance, str) and _looks_numeric(e.instance):
                lines.append(f"config key '{_path(e)}': {e.message}: YAML reads {e.instance} as text (a number in "
                             f"exponent form needs a decimal point and a signed exponent, e.g. 1.0e-5), or write it "
                             f"without an exponent (0.00001)")
            elif e.validator == "oneOf" and e.schema.get("description"):
                lines.append(f"config key '{_path(e)}': {e.instance!r} is none of the forms it takes: "
                             f"{e.schema['description']}")
            else:
                lines.append(f"config key '{_path(e)}': {e.message}")
        raise ConfigError(
            "invalid configuration (see config/README.md for every key):\n  - " + "\n  - ".join(lines)
        )
    _check_semantics(config)
    return config


#: why train.mixed_precision fp16 is refused (the config validation and the trainer's settings say the same)
FP16_REFUSED = ("fp16 is not supported (fp16 gradients underflow without a loss scaler, which this trainer does not "
                "use); use bf16, which has float32's range, or no")

#: names of the layers of a diffusers UNet2DConditionModel that LoRA can adapt (peft matches them as name suffixes);
#: a test checks that each names a module of a real UNet
UNET_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                     "conv1", "conv2", "conv_shortcut", "time_emb_proj", "conv_in", "conv_out", "linear_1",
                     "linear_2")


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_semantics(config: dict) -> None:
    """Rules the schema cannot express."""
    problems = []
    betas = config["rocm"]["betas"]
    for d in config["rocm"]["divergences"]:
        if d not in betas:
            problems.append(f"config key 'rocm.betas': no beta grid for divergence '{d}' listed in rocm.divergences")
    from ..runs import DIVERGENCES

    unknown = sorted(set(config["rocm"]["targets"]) - set(DIVERGENCES))
    if unknown:
        problems.append(f"config key 'rocm.targets': {unknown} are not divergences; known: {', '.join(DIVERGENCES)}")
    a = config["rocm"]["adaptive"]
    if not a["beta_min"] <= a["init_beta"] <= a["beta_max"]:
        problems.append(f"config key 'rocm.adaptive': need beta_min <= init_beta <= beta_max, got {a['beta_min']}, "
                        f"{a['init_beta']}, {a['beta_max']}")
    sb = config["sandbox"]
    if sb["lcm"]["w_min"] > sb["lcm"]["w_max"]:
        problems.append("config key 'sandbox.lcm': w_min must not exceed w_max")
    m = sb["models"]
    bad = [c for c in m["unet_channels"] if c % m["attention_head_dim"]]
    if bad:
        problems.append(f"config key 'sandbox.models.unet_channels': {bad} not a multiple of "
                        f"sandbox.models.attention_head_dim = {m['attention_head_dim']}")
    if config["name"] in RESERVED_NAMES:
        problems.append(f"config key 'name': '{config['name']}' is reserved (it would put this config's outputs "
                        f"among another's folders: {', '.join(RESERVED_NAMES)}); choose another name")
    if config["setting"] == "hub" and not config["model"]["lcm"]:
        problems.append("config key 'model.lcm': the hub setting needs an LCM hub id or folder")
    for g in ("lcm", "diffusion"):
        if config["setting"] == "sandbox" and config["model"][g]:
            problems.append(f"config key 'model.{g}': the sandbox setting trains and uses its own models and would "
                            f"ignore '{config['model'][g]}'; leave it empty, or set setting: hub to use it")
    if config["setting"] == "sandbox" and config["prompts"]["source"] != "sandbox":
        problems.append("config key 'prompts.source': the sandbox setting needs sandbox prompts (its judge reads them)")
    if config["model"]["num_steps"] < 2 and config["rocm"]["final_step"] is False:
        problems.append("config key 'model.num_steps': with 1 step and rocm.final_step false there is no transition "
                        "to regularise")
    t = config["train"]
    if t["batch_size"] % t["num_processes"]:
        problems.append(f"config key 'train.num_processes': the global batch train.batch_size = {t['batch_size']} "
                        f"does not split evenly over {t['num_processes']} processes; make batch_size a multiple of "
                        f"num_processes")
    sf = config["score_function"]
    if sf["methods"]:
        k = sf["images_per_prompt"]
        if t["batch_size"] < 2 or t["batch_size"] % k:
            problems.append(f"config key 'score_function.images_per_prompt': the score-function methods "
                            f"({', '.join(sf['methods'])}) split train.batch_size = {t['batch_size']} into groups of "
                            f"{k} images per prompt (each image's baseline is the others' mean), so the batch must be "
                            f"at least 2 and a multiple of {k}; raise train.batch_size or change images_per_prompt")
        if config["model"]["num_steps"] < 2:
            problems.append("config key 'model.num_steps': the score-function methods weigh the sampler's stochastic "
                            "transitions, and with 1 step there is none; use 2 or more")
        budget = config["baselines"]["reward_queries"]
        if budget is not None and budget != t["steps"] * t["batch_size"]:
            problems.append(f"config key 'baselines.reward_queries': {budget} reward queries for the baselines, but the "
                            f"score-function methods make ROCM's train.steps x train.batch_size = "
                            f"{t['steps'] * t['batch_size']}; they are compared at equal queries, so leave it null")
        if sf["divergence"] not in config["rocm"]["divergences"]:
            problems.append(f"config key 'score_function.divergence': '{sf['divergence']}' is not in rocm.divergences "
                            f"{config['rocm']['divergences']}, so the variants would have no ROCM arm of their "
                            f"divergence to be compared with; add it there or choose one of those")
    if t["mixed_precision"] == "fp16":
        problems.append(f"config key 'train.mixed_precision': {FP16_REFUSED}")
    unknown = [m for m in t["lora"]["target_modules"] if m not in UNET_LORA_TARGETS]
    if unknown:
        problems.append(f"config key 'train.lora.target_modules': {unknown} name no layer of a diffusers UNet; known: "
                        f"{', '.join(UNET_LORA_TARGETS)}")
    if t["sample_every"] and t["trackers"] and not t["probe"]["prompts"]:
        problems.append("config key 'train.sample_every': the sample grids are the held-out probe's images, and "
                        "train.probe.prompts is 0; set train.probe.prompts > 0, or sample_every: 0")
    from ..training.monitor import tracker_problems  # torch-free: unknown trackers, packages not installed
    from .scorer_catalogue import scorer_problems  # torch-free: names against the built-in scorers
    from ..training.batching import batch_problems  # torch-free: the methods check the same rules

    problems += scorer_problems(config)
    problems += tracker_problems(t["trackers"])

    for method in config["baselines"]["methods"]:
        problems += batch_problems(method, config["baselines"][method])
    if problems:
        raise ConfigError("invalid configuration (see config/README.md for every key):\n  - " + "\n  - ".join(problems))


#: keys added after results existed, with the value under which a job computes what it computed before the key
#: existed: left out of the rerun digest at that value, so that a new key does not rerun finished jobs
NEUTRAL_DEFAULTS = {"train.surrogate": ""}

#: keys that change how a job runs, not what it computes: never a reason to rerun a finished job
OPERATIONAL_KEYS = ("device", "fork_server", "conda_envs", "train.threads", "train.num_processes",
                    "train.checkpoint_every", "train.log_every", "train.trackers", "train.tracker_project", "train.sample_every", "evaluation.batch_size")


#: the default config: the only one whose outputs go to results/ and paper_figures/ themselves (no ``name``)
DEFAULT_CONFIG_PATH = SCHEMA_PATH.parents[2] / "config" / "config.yaml"

#: names a config cannot take: they would put its outputs among another config's folders (results/<name>/ beside
#: results/runs/, paper_figures/<name>/ beside paper_figures/data/)
RESERVED_NAMES = ("data", "runs", "models", "prompts", "samples", "scores", "stats", "benchmarks", "tiny_hub",
                  "staged.json", "checkpoints", "default")


def output_dirs(config: dict) -> dict[str, str]:
    """Where a config's outputs go, relative to the working directory: ``results``, ``figures`` and ``logs`` folders.

    The default config (``name`` empty) writes ``results/``, ``paper_figures/`` and ``logs/``, the committed figures;
    any other config writes ``results/<name>/``, ``paper_figures/<name>/`` and ``logs/<name>/``, so that it never
    overwrites them (:func:`check_output_name` refuses an unnamed config that is not the default one)."""
    name = config.get("name") or ""
    if not name:
        return {"results": "results", "figures": "paper_figures", "logs": "logs"}
    return {"results": f"results/{name}", "figures": f"paper_figures/{name}", "logs": f"logs/{name}"}


def config_differences(config: dict, reference: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two validated configs, leaving out :data:`OPERATIONAL_KEYS` and
    ``name`` (they change how jobs run or where outputs go, not what is computed)."""
    out = []
    for key in sorted(set(config) | set(reference)):
        path = f"{prefix}{key}"
        if path in OPERATIONAL_KEYS or path == "name":
            continue
        a, b = config.get(key), reference.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{path}.")
        elif a != b:
            out.append(path)
    return out


def check_output_name(config: dict, default_path: str | Path = DEFAULT_CONFIG_PATH) -> None:
    """Refuse a config without a ``name`` that computes something else than the default config: its outputs would
    overwrite the default run's ``results/`` and the committed ``paper_figures/``. ``config`` is validated."""
    if config.get("name"):
        return
    differ = config_differences(config, load_config(default_path))
    if differ:
        shown = ", ".join(differ[:8]) + (f" and {len(differ) - 8} more" if len(differ) > 8 else "")
        raise ConfigError(
            f"this config differs from the default config ({default_path}) in {shown}, but has no 'name': its outputs "
            f"would overwrite the default run's results/ and the committed paper_figures/. Give it a name, in the "
            f"config file (name: my-run) or on the command line (--config name=my-run); its outputs then go to "
            f"results/<name>/, paper_figures/<name>/ and logs/<name>/ (config/README.md, 'name')")


def _get(config: dict, key: str, missing=object()):
    """The value at a dotted key, or ``missing``."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return missing
        node = node[part]
    return node


def config_digest(config: dict, *keys: str) -> str:
    """A 12-hex-digit hash of the config values at the dotted ``keys`` (whole sections such as ``"train"`` or single
    values such as ``"sandbox.judge_tau"``), leaving out :data:`OPERATIONAL_KEYS` and the keys of
    :data:`NEUTRAL_DEFAULTS` at their neutral value.

    Each rule passes the digest of the keys its stage reads as a ``params`` entry, so that Snakemake's ``params``
    rerun trigger reruns a finished job (and, through its newer outputs, everything downstream) when one of those
    values changes, and only then. Keys that choose which jobs exist (the beta grid, seeds, methods) are not a rule's
    keys: changing them adds or drops jobs instead.
    """
    import hashlib

    content = copy.deepcopy(config)
    neutral = [k for k, v in NEUTRAL_DEFAULTS.items() if _get(content, k) == v]
    for op in (*OPERATIONAL_KEYS, *neutral):  # drop them once, wherever they sit under a picked section
        *parents, leaf = op.split(".")
        node = content
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    picked = {}
    for key in keys:
        if key in OPERATIONAL_KEYS or key in neutral:  # a stage that reads the neutral key itself
            continue
        node = content
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"config_digest: no config key '{key}'")
            node = node[part]
        picked[key] = node
    blob = json.dumps(picked, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_config(*paths: str | Path, overrides: dict | None = None) -> dict:
    """Merge YAML files (later ones win, recursively, as Snakemake does) and validate."""
    config: dict[str, Any] = {}
    for p in paths:
        _update(config, read_config_file(p))
    if overrides:
        _update(config, overrides)
    return validate_config(config)


def read_config_file(path: str | Path) -> dict:
    """One config file as a mapping; a missing or unreadable file, a syntax error or a top level that is not a
    mapping is a :class:`ConfigError` naming the file (and the line, for a syntax error)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(f"config file {path} does not exist") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from err
    try:  # JSON as JSON: YAML 1.1 would read a dumped 3e-05 as the string "3e-05"
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise ConfigError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}{at}: "
                          f"{getattr(err, 'problem', None) or err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys (setting:, train:, ...) at its top level, "
                          f"not a {type(data).__name__}")
    return data


def _update(base: dict, new: dict) -> dict:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _update(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base
