"""Training: ROCM and the baselines over one shared loop (:mod:`.loop`)."""
