"""The built-in scorers by name, without torch (outside the rewards package, which imports it): what the config
validation checks names against before any job runs. The registry (:mod:`rocm_rlhf.rewards`) is the implementation;
a test keeps the two in step."""

from __future__ import annotations

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
}


def known_scorers() -> dict[str, tuple[bool, str]]:
    """The built-in scorers, plus any registered in this process already (a plug-in or test scorer), without
    importing the registry."""
    out = dict(BUILTIN)
    registry = sys.modules.get("rocm_rlhf.rewards")
    if registry is not None:
        for name, factory in registry._REGISTRY.items():
            out.setdefault(name, (bool(getattr(factory, "differentiable", True)), "any"))
    return out


def scorer_problems(config: dict) -> list[str]:
    """Unknown scorer names, a non-differentiable built-in training reward, sandbox scorers outside the sandbox, and
    built-in figure metrics that are not evaluated, each naming its config key."""
    known = known_scorers()
    names = ", ".join(sorted(known))
    out = []
    setting = config["setting"]
    metrics = list(config["evaluation"]["metrics"])
    reward = config["train"]["reward"]
    checks = [("train.reward", reward)] + [(f"evaluation.metrics[{i}]", m) for i, m in enumerate(metrics)]
    f = config["figures"]
    checks += [(f"figures.{k}", f[k]) for k in ("quality_metric", "reward_metric") if f[k]]
    for key, name in checks:
        if name not in known:
            out.append(f"config key '{key}': unknown scorer '{name}'; known: {names}")
        elif known[name][1] == "sandbox" and setting != "sandbox":
            out.append(f"config key '{key}': scorer '{name}' belongs to the sandbox and needs setting: sandbox")
    # the next two are static facts of the built-ins only: a plug-in scorer is checked when its job starts (and a
    # library user training a baseline alone may well give it a reward without gradients)
    if reward in BUILTIN and not BUILTIN[reward][0]:
        out.append(f"config key 'train.reward': scorer '{reward}' is not differentiable, and ROCM backpropagates "
                   f"through the reward; train on a differentiable scorer (e.g. "
                   f"{'proxy_pick' if setting == 'sandbox' else 'pickscore'}) and evaluate with '{reward}'")
    used = {"figures.reward_metric": f["reward_metric"] or reward,
            "figures.quality_metric": f["quality_metric"] or ("gold" if setting == "sandbox" else
                                                              (f["reward_metric"] or reward))}
    for key, name in used.items():
        if name in BUILTIN and name not in metrics:
            out.append(f"config key '{key}': the figures read '{name}' from the scores, but evaluation.metrics does "
                       f"not score it; add it to evaluation.metrics")
    return out
