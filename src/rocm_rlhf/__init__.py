"""rocm_rlhf: RLHF on consistency models (ROCM) and its baselines, as a library.

The library never imports Snakemake; the workflow in ``workflow/`` calls into it through thin scripts.
"""

__version__ = "0.1.0"
