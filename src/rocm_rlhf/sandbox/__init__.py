"""The offline sandbox: a small, honest text-to-image world that runs the pipeline's code paths on CPU.

Modules (import them directly; this package imports nothing heavy on purpose):

- :mod:`rocm_rlhf.sandbox.render`: the procedural renderer (shapes with known attributes);
- :mod:`rocm_rlhf.sandbox.captions`: the caption grammar (captions of attributes, and parsing them back);
- :mod:`rocm_rlhf.sandbox.judge`: the gold judge (prompt fidelity x realism from the renderer's ground truth); it
  stands in for human evaluation and never feeds training.
- the tiny base models (tokenizer, text encoder, VAE, teacher diffusion UNet, LCM distillation) and the learned
  proxy rewards live in the other modules of this package.
"""
