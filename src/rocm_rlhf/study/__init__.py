"""A pairwise human preference study of the evaluation samples, and its simulated stand-in in the sandbox.

- :mod:`.design`: the study from the evaluation samples (pairs of one (prompt, sample seed) from two arms, left and
  right drawn and recorded, attention checks mixed in): a self-contained folder (``study.json``, ``items.csv``,
  ``images/``).
- :mod:`.db`: the answers in SQLite (one row per rater and item, written once, committed before the reply).
- :mod:`.app`: the local web app (Flask) that shows a rater the prompt and the two images and records the choice.
- :mod:`.simulate`: simulated raters (the sandbox's gold judge choosing with noise, or a careless rater) that answer
  through the app's HTTP interface.
- :mod:`.analysis`: the answers as results: attention checks, win rates per arm pair, the Bradley-Terry fit,
  rater agreement, the table and the figure.

Nothing here imports Snakemake; the stages are in :mod:`rocm_rlhf.pipeline.study`. How a study is run with people:
README.md, section 'Human preference study'.
"""
