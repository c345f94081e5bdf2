"""Paired evaluation: the noise of a (prompt, sample seed) unit is the same in every run, whatever the batch."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from rocm_rlhf.evaluation import diversity, eval_units, unit_seed
from rocm_rlhf.models import initial_noise, seeded_noise

torch.set_num_threads(1)

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


@pytest.mark.parametrize("shape", [(3, 5, 5), (4, 8, 8), (4, 6, 8)])  # non-square latents too
def test_seeded_noise_keeps_the_numbers_of_both_samplers(shape):
    """The per-unit noise is the one the LCM (initial_noise) and DDIM (generate_diffusion_units) evaluation drew
    before they shared seeded_noise: the former formulas, written out here."""
    seeds = [unit_seed("p1", 0), unit_seed("p2", 1), 7]

    def old_lcm(k):  # models.initial_noise: latents, then K - 1 draws of one latent each
        lat, noi = [], []
        for s in seeds:
            g = torch.Generator().manual_seed(int(s))
            lat.append(torch.randn((1, *shape), generator=g))
            draws = [torch.randn((1, *shape), generator=g) for _ in range(k - 1)]
            noi.append(torch.stack(draws, 1) if draws else torch.zeros((1, 0, *shape)))
        return torch.cat(lat), torch.cat(noi)

    def old_ddim(t):  # evaluation.generate_diffusion_units: latents, then one draw of T latents
        lat, noi = [], []
        for s in seeds:
            g = torch.Generator().manual_seed(int(s))
            lat.append(torch.randn((1, *shape), generator=g))
            noi.append(torch.randn((1, t, *shape), generator=g))
        return torch.cat(lat), torch.cat(noi)

    pipe = SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(in_channels=shape[0], sample_size=shape[1:])))
    for k in (1, 2, 4):
        lat, noi = seeded_noise(seeds, shape, k, "lcm")
        ref_lat, ref_noi = old_lcm(k)
        assert noi.shape == (3, k - 1, *shape)
        assert torch.equal(lat, ref_lat) and torch.equal(noi, ref_noi)
        lat2, noi2 = initial_noise(pipe, 3, k, seeds=seeds)
        assert torch.equal(lat2, ref_lat) and torch.equal(noi2, ref_noi)
    for t in (1, 3, 7):
        lat, noi = seeded_noise(seeds, shape, t, "ddim")
        ref_lat, ref_noi = old_ddim(t)
        assert noi.shape == (3, t, *shape)
        assert torch.equal(lat, ref_lat) and torch.equal(noi, ref_noi)
    # the two draw orders are genuinely different for this shape (so neither pin can pass for the other sampler)
    if shape == (3, 5, 5):
        assert not torch.equal(seeded_noise(seeds, shape, 4, "lcm")[1], seeded_noise(seeds, shape, 3, "ddim")[1])
    with pytest.raises(ValueError, match="sampler must be one of"):
        seeded_noise(seeds, shape, 2, "ddpm")


def test_diversity_is_mean_distance_to_the_other_images_of_the_prompt():
    images = torch.zeros(4, 3, 2, 2)
    images[1] += 1.0  # prompt p1: two images at RMS distance 1
    units = pd.DataFrame({"prompt_id": ["p1", "p1", "p2", "p3"], "sample_seed": [0, 1, 0, 0], "prompt": "x"})
    d = diversity(images, units)
    np.testing.assert_allclose(d[:2], [1.0, 1.0])
    assert np.isnan(d[2]) and np.isnan(d[3])  # alone: undefined
