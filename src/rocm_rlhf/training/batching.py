"""The rollout-batch rules of the baselines, without torch: the config validation and the methods check the same
rules, so a setting under which a method cannot learn fails before any work, naming its config keys."""

from __future__ import annotations

#: baselines whose advantage is the reward normalised per prompt (DDPO's stat tracking): one image per step gives
#: ``(r - r) / (0 + eps) = 0`` until a prompt has been drawn ``stat_min_count`` times (never, on 4,000 prompts)
NORMALISED = ("rlcm", "ddpo")


def batch_problems(method: str, block: dict) -> list[str]:
    """What is wrong with the rollout batch of baseline ``method`` given its settings ``block`` (the fields of
    ``baselines.<method>``); an empty list when it can learn."""
    key = f"baselines.{method}"
    out = []
    if method in NORMALISED:
        batch, mb = block.get("batch_size"), block.get("num_minibatches", 1)
        if isinstance(batch, int) and batch < 2:
            out.append(f"config key '{key}.batch_size' = {batch}: {method.upper()} normalises each reward by the "
                       f"rewards of its prompt (or of the step's batch while the prompt has fewer than "
                       f"{key}.stat_min_count), so with one image per step every advantage is 0 and nothing is "
                       f"learned; set {key}.batch_size >= 2 (its own rollout batch, independent of train.batch_size)")
        elif isinstance(batch, int) and isinstance(mb, int) and mb > 0 and batch % mb:
            out.append(f"config key '{key}.num_minibatches' = {mb} does not divide {key}.batch_size = {batch}: "
                       f"make batch_size a multiple of num_minibatches")
    if method == "d3po":
        pairs, mb = block.get("prompts_per_step"), block.get("num_minibatches")
        if isinstance(pairs, int) and isinstance(mb, int) and mb > 0 and pairs % mb:
            out.append(f"config key '{key}.num_minibatches' = {mb} does not divide {key}.prompts_per_step = {pairs}: "
                       f"make prompts_per_step a multiple of num_minibatches (or null: one update per pair)")
    return out


def check_batch(method: str, block: dict) -> None:
    """Raise ``ValueError`` with every problem of :func:`batch_problems`."""
    problems = batch_problems(method, block)
    if problems:
        raise ValueError("; ".join(problems))
