"""The analysis of a finished run, torch-free (pandas, numpy, scipy, matplotlib): scores, arms, statistics, tables,
figures and training logs.

Modules: :mod:`.scores` (the score table: columns, validator, reader), :mod:`.arms` (row order, labels, the choice
of beta, controls), :mod:`.stats` (seed summaries, paired tests, Holm), :mod:`.render` (Markdown and LaTeX),
:mod:`.tables` (Table 1, the divergence x beta table), :mod:`.logs` (training logs) and :mod:`.figures`.
Conventions and formulas: docs/method.md, section 'Evaluation, statistics, tables and figures'.
"""
