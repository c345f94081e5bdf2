"""The scorers by name, without torch (outside the rewards package, which imports it): what the config validation
checks names against before any job runs. The registry (:mod:`rocm_rlhf.rewards`) is the implementation; a test keeps
the two in step. Besides the built-ins, a scorer may be a plug-in named ``module:Class`` or ``module:function``
(:func:`plugin_problem`; the protocol is in docs/extending.md), and ``train.reward`` may be a weighted sum of scorers
(:func:`reward_terms`, :func:`reward_label`)."""

from __future__ import annotations

import importlib
import inspect
import sys

#: name -> (differentiable, the setting it needs: "sandbox" for scorers of the sandbox's world, or "any")
BUILTIN: dict[str, tuple[bool, str]] = {
    "pickscore": (True, "any"),
    "clipscore": (True, "any"),
    "hpsv2": (True, "any"),
    "aesthetic": (True, "any"),
    "blipscore": (True, "any"),
    "imagereward": (True, "any"),
    "proxy_pick": (True, "sandbox"),
    "proxy_aesthetic": (True, "sandbox"),
    "gold": (False, "sandbox"),
    "gold_fidelity": (False, "sandbox"),
    "gold_realism": (False, "sandbox"),
    "jpeg_compressibility": (False, "any"),
    "total_variation": (True, "any"),
}


def reward_terms(spec) -> dict[str, float]:
    """``train.reward`` as ``{scorer name: weight}``: a name (weight 1), a mapping ``{name: weight}`` or a list of
    ``{name, weight}`` (the schema checks the shapes)."""
    if isinstance(spec, str):
        return {spec: 1.0}
    if isinstance(spec, dict):
        return {str(k): float(v) for k, v in spec.items()}
    out: dict[str, float] = {}
    for term in spec:
        if term["name"] in out:
            raise ValueError(f"config key 'train.reward': scorer '{term['name']}' is listed twice; give it one weight")
        out[term["name"]] = float(term["weight"])
    return out


def reward_label(spec) -> str:
    """The training reward's name in run.json and the logs: the scorer's name, or ``w1*name1 + w2*name2``."""
    if isinstance(spec, str):
        return spec
    return " + ".join(f"{w:g}*{n}" for n, w in reward_terms(spec).items())


def is_plugin(name: str) -> bool:
    """A scorer named by its import path, ``module:attribute``."""
    return ":" in name


def load_plugin(name: str):
    """The object a plug-in name points to; :class:`ValueError` saying what is wrong (the name's form, a module that
    cannot be imported, a missing attribute, an object that is neither a ``torch.nn.Module`` class nor a function of
    ``(images, prompts)``)."""
    module, _, attr = name.partition(":")
    if not module or not attr or ":" in attr:
        raise ValueError(f"scorer '{name}': a plug-in is named 'module:Class' or 'module:function' (one colon), "
                         f"e.g. 'custom_reward:Redness'")
    try:
        mod = importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 -- whatever the import raises, the message is the same
        raise ValueError(f"scorer '{name}': cannot import module '{module}' ({type(err).__name__}: {err}); the "
                         f"module must be importable where the jobs run: install it, or put its folder on PYTHONPATH "
                         f"(e.g. PYTHONPATH=examples for examples/custom_reward.py)") from err
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"scorer '{name}': module '{module}' ({getattr(mod, '__file__', '?')}) has no attribute "
                             f"'{attr}'")
        obj = getattr(obj, part)
    if inspect.isclass(obj):
        import torch

        if not issubclass(obj, torch.nn.Module):
            raise ValueError(f"scorer '{name}': class {obj.__qualname__} is not a torch.nn.Module; subclass "
                             f"rocm_rlhf.rewards.Scorer (forward(images, prompts) -> scores)")
        return obj
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        try:
            inspect.signature(obj).bind(None, None)
        except TypeError as err:
            raise ValueError(f"scorer '{name}': function {obj.__qualname__} must take (images, prompts) ({err})") \
                from err
        return obj
    raise ValueError(f"scorer '{name}': {attr} is a {type(obj).__name__}, not a scorer class (a torch.nn.Module "
                     f"subclass) or a function of (images, prompts)")


def known_scorers() -> dict[str, tuple[bool, str]]:
    """The built-in scorers, plus any registered in this process already (a plug-in or test scorer), without
    importing the registry."""
    out = dict(BUILTIN)
    registry = sys.modules.get("rocm_rlhf.rewards")
    if registry is not None:
        for name, factory in registry._REGISTRY.items():
            out.setdefault(name, (bool(getattr(factory, "differentiable", True)), "any"))
    return out


def pathwise_reward(config: dict):
    """What ROCM's pathwise gradient climbs: ``train.reward``, or ``train.surrogate`` where that is set and
    ``train.reward`` is a built-in or plug-in scorer without gradients (:func:`scorer_problems` refuses a config that
    has neither)."""
    spec, surrogate = config["train"]["reward"], config["train"].get("surrogate") or ""
    if not surrogate:
        return spec
    known = known_scorers()
    for name in reward_terms(spec):
        if is_plugin(name) and name not in known:
            try:
                known[name] = (bool(getattr(load_plugin(name), "differentiable", True)), "any")
            except ValueError:
                continue
        if name in known and not known[name][0]:
            return surrogate
    return spec


def scorer_problems(config: dict) -> list[str]:
    """Unknown scorer names, plug-ins that cannot be loaded, a non-differentiable training reward, sandbox scorers
    outside the sandbox, and built-in figure metrics that are not evaluated, each naming its config key."""
    known = known_scorers()
    names = ", ".join(sorted(known))
    out = []
    setting = config["setting"]
    metrics = list(config["evaluation"]["metrics"])
    spec = config["train"]["reward"]
    try:
        terms = reward_terms(spec)
    except ValueError as err:
        return [str(err)]
    single = isinstance(spec, str)
    checks = [("train.reward" if single else f"train.reward[{name}]", name) for name in terms]
    surrogate = config["train"].get("surrogate") or ""
    if surrogate:
        checks.append(("train.surrogate", surrogate))
    checks += [(f"evaluation.metrics[{i}]", m) for i, m in enumerate(metrics)]
    f = config["figures"]
    checks += [(f"figures.{k}", f[k]) for k in ("quality_metric", "reward_metric") if f[k]]
    out += [f"config key 'train.reward[{name}]': weight 0 adds nothing; remove the term" for name, w in terms.items()
            if w == 0]
    broken = set()
    for key, name in checks:
        if is_plugin(name):
            try:
                obj = load_plugin(name)
            except ValueError as err:
                if name not in broken:
                    out.append(f"config key '{key}': {err}")
                broken.add(name)
                continue
            known[name] = (bool(getattr(obj, "differentiable", True)), "any")
            if inspect.isfunction(obj) and config["rewards"].get(name):
                out.append(f"config key 'rewards.{name}': a function scorer takes no options; make it a class "
                           f"(rocm_rlhf.rewards.Scorer) to configure it")
        elif name not in known:
            out.append(f"config key '{key}': unknown scorer '{name}'; known: {names} (or a plug-in, 'module:Class')")
        elif known[name][1] == "sandbox" and setting != "sandbox":
            out.append(f"config key '{key}': scorer '{name}' belongs to the sandbox and needs setting: sandbox")
    # the next check is a static fact of the built-ins and of the plug-ins (their `differentiable` attribute): a
    # scorer registered at run time is checked when its job starts (and a library user training a baseline alone may
    # well give it a reward without gradients)
    def static_nondiff(name):
        return (name in BUILTIN or is_plugin(name)) and name in known and not known[name][0]

    example = "proxy_pick" if setting == "sandbox" else "pickscore"
    nondiff = [(key, name) for key, name in checks[:len(terms)] if static_nondiff(name)]
    if surrogate and static_nondiff(surrogate):
        out.append(f"config key 'train.surrogate': scorer '{surrogate}' is not differentiable, and a surrogate is "
                   f"what the pathwise gradient climbs; name a differentiable scorer (e.g. {example})")
    sf_methods = list((config.get("score_function") or {}).get("methods", []))
    if "rocm_hybrid" in sf_methods and not surrogate:
        out.append("config key 'score_function.methods': rocm_hybrid takes the pathwise gradient of a differentiable "
                   f"surrogate of train.reward; set train.surrogate (e.g. {example}), or run rocm_sf alone")
    if nondiff and not surrogate:  # the pipeline always runs ROCM (rocm.divergences has at least one)
        for key, name in nondiff:
            out.append(f"config key '{key}': scorer '{name}' is not differentiable, and ROCM backpropagates "
                       f"through the reward; set train.surrogate to a differentiable scorer that ROCM climbs instead "
                       f"(e.g. {example}; the score-function methods and the baselines still train on '{name}'), or "
                       f"train on a differentiable scorer and evaluate with '{name}'")
    if not single and not f["reward_metric"]:
        out.append(f"config key 'figures.reward_metric': train.reward is a weighted sum ({reward_label(spec)}), which "
                   f"is no evaluation metric; name the metric the figures report as the training reward (e.g. "
                   f"'{next(iter(terms))}') and list it in evaluation.metrics")
    reward = spec if single else f["reward_metric"]
    used = {"figures.reward_metric": f["reward_metric"] or reward,
            "figures.quality_metric": f["quality_metric"] or ("gold" if setting == "sandbox" else
                                                              (f["reward_metric"] or reward))}
    for key, name in used.items():
        if name and (name in BUILTIN or is_plugin(name)) and name not in metrics and name not in broken:
            out.append(f"config key '{key}': the figures read '{name}' from the scores, but evaluation.metrics does "
                       f"not score it; add it to evaluation.metrics")
    return out
