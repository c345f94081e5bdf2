"""Stage of workflow/rules/tiny_hub.smk: tiny random stand-ins of every hub model and of the Pick-a-Pic captions,
in the hub layouts (config/paper-tiny.yaml; rocm_rlhf.infra.tiny_hub), and a manifest of the files written."""

from __future__ import annotations

import json

from ..infra.jobs import stage
from ..infra.utils import write_json


@stage(reads=("seed",))
def tiny_hub(job) -> None:
    from ..infra.tiny_hub import build_tiny_hub

    manifest = build_tiny_hub(job.output.models, seed=job.config["seed"])
    write_json(job.output.manifest, manifest)
    print(json.dumps(manifest, indent=1))
