"""Paired evaluation: the noise of a (prompt, sample seed) unit is the same in every run, whatever the batch."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from rocm_rlhf.evaluation import diversity, eval_units, unit_seed
from rocm_rlhf.models import initial_noise

PIPE = SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(in_channels=4, sample_size=8)))


def test_unit_noise_is_independent_of_batch_and_order():
    units = eval_units(pd.DataFrame({"prompt_id": ["p1", "p2", "p3"], "prompt": ["a", "b", "c"]}), 2)
    seeds = [unit_seed(p, s) for p, s in zip(units["prompt_id"], units["sample_seed"])]
    lat, noise = initial_noise(PIPE, len(seeds), 4, seeds=seeds)
    # the same units sampled alone and in reverse order (another run, another batch size) get the same noise
    for i in (0, 3, 5):
        l1, n1 = initial_noise(PIPE, 1, 4, seeds=[seeds[i]])
        assert torch.equal(l1[0], lat[i]) and torch.equal(n1[0], noise[i])
    lr, nr = initial_noise(PIPE, len(seeds), 4, seeds=seeds[::-1])
    assert torch.equal(lr.flip(0), lat) and torch.equal(nr.flip(0), noise)
    # and different units get different noise
    assert not torch.equal(lat[0], lat[1]) and unit_seed("p1", 0) != unit_seed("p1", 1) != unit_seed("p2", 0)


def test_diversity_is_mean_distance_to_the_other_images_of_the_prompt():
    images = torch.zeros(4, 3, 2, 2)
    images[1] += 1.0  # prompt p1: two images at RMS distance 1
    units = pd.DataFrame({"prompt_id": ["p1", "p1", "p2", "p3"], "sample_seed": [0, 1, 0, 0], "prompt": "x"})
    d = diversity(images, units)
    np.testing.assert_allclose(d[:2], [1.0, 1.0])
    assert np.isnan(d[2]) and np.isnan(d[3])  # alone: undefined
