"""The sandbox renderer, the caption grammar and the gold judge."""

import itertools
import math

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from rocm_rlhf.sandbox.judge import DEFAULT_TAU, GoldJudge  # noqa: E402
from rocm_rlhf.sandbox.captions import MENTION_PATTERNS, N_TEMPLATES, all_captions, caption, parse_caption  # noqa: E402
from rocm_rlhf.sandbox.render import (  # noqa: E402
    ATTRIBUTE_NAMES,
    ATTRIBUTE_VALUES,
    COLOR_NAMES,
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    Attributes,
    World,
    all_attributes,
)


@pytest.fixture(scope="module")
def world():
    return World()


@pytest.fixture(scope="module")
def judge(world):
    return GoldJudge(world)


# ------------------------------------------------------------------------------------------------------- renderer
def test_attributes_enumeration():
    combos = all_attributes()
    assert len(combos) == 120 == len(set(combos))
    assert combos[0] == Attributes("circle", "red", "small", "left")
    assert {a.shape for a in combos} == set(SHAPES) and {a.position for a in combos} == set(POSITIONS)
    with pytest.raises(ValueError, match="unknown color"):
        Attributes("circle", "purple", "small", "left")


def test_render_is_deterministic_for_a_seed(world):
    a1, attrs1 = world.sample(64, np.random.default_rng(3))
    a2, attrs2 = World().sample(64, np.random.default_rng(3))  # a fresh world, no shared cache
    b, attrs3 = world.sample(64, np.random.default_rng(4))
    assert attrs1 == attrs2 and torch.equal(a1, a2)
    assert attrs1 != attrs3 and not torch.equal(a1, b)
    assert a1.dtype == torch.float32 and a1.shape == (64, 3, 32, 32)
    assert float(a1.min()) >= 0.0 and float(a1.max()) <= 1.0


def test_render_batch_uses_the_drawn_shifts(world):
    attrs = list(all_attributes()[::7])
    batch = world.render_batch(attrs, np.random.default_rng(11))
    shifts = world.random_shifts(len(attrs), np.random.default_rng(11))
    assert np.abs(shifts).max() <= world.jitter and len({tuple(s) for s in shifts}) > 1
    for img, a, s in zip(batch, attrs, shifts):
        np.testing.assert_array_equal(img.numpy(), world.render(a, tuple(s)))
    unshifted = world.render_batch(attrs, None)
    for img, a in zip(unshifted, attrs):
        np.testing.assert_array_equal(img.numpy(), world.render(a))
    with pytest.raises(ValueError, match="exceeds jitter"):
        world.render(attrs[0], (2, 0))


def test_sample_is_uniform_over_the_given_combos(world):
    combos = [
        Attributes("circle", "red", "small", "left"),
        Attributes("square", "blue", "large", "top"),
        Attributes("triangle", "yellow", "small", "center"),
    ]
    _, attrs = world.sample(3000, np.random.default_rng(0), combos=combos)
    counts = [attrs.count(c) for c in combos]
    assert sum(counts) == 3000 and all(900 < c < 1100 for c in counts), counts  # 1000 +- 4.6 sd


def test_shift_moves_the_image_by_whole_pixels(world):
    a = Attributes("triangle", "green", "small", "center")
    base, moved = world.render(a), world.render(a, (1, -1))  # right 1, up 1
    np.testing.assert_allclose(moved[:, :-1, 1:], base[:, 1:, :-1], atol=1e-7)


@pytest.mark.parametrize("image_size,jitter", [(32, 1), (16, 1), (24, 1), (64, 2)])
def test_shapes_stay_on_the_canvas(image_size, jitter):
    """The covered area is the same for every position and shift (nothing is cut off) and matches the geometry."""
    w = World(image_size=image_size, jitter=jitter)
    for shape, size in itertools.product(SHAPES, SIZES):
        d = w.size_pixels[size]
        exact = {"circle": math.pi * d * d / 4, "square": d * d, "triangle": d * d / 2}[shape]
        ref = float(w.coverage(shape, size, "center").sum())
        # 4x4 supersampling moves each edge by at most 1/4 px: area error <= 2 * d / 4 (+ a corner)
        assert abs(ref - exact) <= 0.55 * d, (shape, size, ref, exact)
        for position, shift in itertools.product(POSITIONS, w.shifts):
            area = float(w.coverage(shape, size, position, shift).sum())
            assert area == pytest.approx(ref, abs=1e-3), (shape, size, position, shift)
    large = [w.coverage("square", "large", p).sum() for p in POSITIONS]
    assert max(large) == pytest.approx(min(large))


def test_too_much_jitter_or_a_bad_background_is_refused():
    with pytest.raises(ValueError, match="jitter"):
        World(image_size=16, jitter=3)
    with pytest.raises(ValueError, match="too close to the colour yellow"):
        World(background=(0.9, 0.8, 0.2))


def test_colours_are_as_specified(world):
    bg = np.asarray(world.background, dtype=np.float32)
    names = list(COLORS)
    rgb = np.asarray([COLORS[n] for n in names])
    assert np.all(rgb >= 0) and np.all(rgb <= 1)
    pair = [np.linalg.norm(rgb[i] - rgb[j]) for i, j in itertools.combinations(range(len(names)), 2)]
    assert min(pair) > 0.5 and min(np.linalg.norm(rgb - bg, axis=1)) > 0.3
    partial = 0
    for a in all_attributes():
        img = world.render(a)
        cx, cy = world.anchors[a.position]
        np.testing.assert_allclose(img[:, int(cy), int(cx)], np.float32(COLORS[a.color]), atol=1e-6)
        for corner in (img[:, 0, 0], img[:, 0, -1], img[:, -1, 0], img[:, -1, -1]):
            np.testing.assert_allclose(corner, bg, atol=1e-6)
        # every pixel is a blend of the background and the colour; anti-aliased edges lie strictly between
        fg = np.float32(COLORS[a.color])[:, None, None]
        cov = world.coverage(a.shape, a.size, a.position)
        np.testing.assert_allclose(img, bg[:, None, None] * (1 - cov) + fg * cov, atol=1e-6)
        partial += int(((cov > 0) & (cov < 1)).sum())
    assert partial > 0


# ------------------------------------------------------------------------------------------------ caption grammar
def test_caption_examples():
    assert caption(Attributes("circle", "red", "large", "left"), 0, ("size", "position")) == (
        "a large red circle on the left"
    )
    assert caption(Attributes("square", "blue", "small", "top"), 0) == "a small blue square at the top"
    assert caption(Attributes("triangle", "green", "large", "center"), 0, ["position"]) == (
        "a green triangle in the center"
    )
    assert caption(Attributes("circle", "red", "small", "right"), 0, ()) == "a red circle"
    assert caption(Attributes("circle", "red", "large", "left"), 1) == "on the left, a large red circle"
    assert caption(Attributes("circle", "red", "large", "left"), 2, ["size"]) == "a red circle, large"
    with pytest.raises(ValueError, match="template_id"):
        caption(Attributes("circle", "red", "large", "left"), N_TEMPLATES)
    with pytest.raises(ValueError, match="mention"):
        caption(Attributes("circle", "red", "large", "left"), 0, ["colour"])


def test_caption_round_trip_over_the_whole_grammar():
    texts = {}
    for a, t, m in itertools.product(all_attributes(), range(N_TEMPLATES), MENTION_PATTERNS):
        text = caption(a, t, m)
        expected = {"shape": a.shape, "color": a.color} | {name: getattr(a, name) for name in m}
        assert parse_caption(text) == expected, text
        assert parse_caption("  " + text.upper().replace(" ", "  ") + " ") == expected
        assert texts.setdefault(text, expected) == expected  # one text never means two attribute sets
    specs = all_captions()
    assert len(specs) == len(texts) == len({s.text for s in specs})
    for s in specs:
        assert s.mentioned() == texts[s.text] == parse_caption(s.text)
        assert (
            caption(
                Attributes(s.shape, s.color, s.size or "small", s.position or "left"),
                s.template_id,
                [n for n in ("size", "position") if getattr(s, n)],
            )
            == s.text
        )
    # every template contributes its own word order
    assert {s.template_id for s in specs} == set(range(N_TEMPLATES)) and N_TEMPLATES >= 3


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a purple circle",
        "a red circle on the moon",
        "a red blue circle",
        "red circle",
        "a red circle left",
        "a circle on the left",
        "a photo of a cat",
        "a red circle on the left on the right",
        "a red circle, large, small",
    ],
)
def test_parse_caption_rejects_text_outside_the_grammar(text):
    with pytest.raises(ValueError, match="caption"):
        parse_caption(text)


# ---------------------------------------------------------------------------------------------------- gold judge
def _prompts_for(attrs_list, rng):
    out = []
    for a in attrs_list:
        t = int(rng.integers(N_TEMPLATES))
        m = MENTION_PATTERNS[int(rng.integers(len(MENTION_PATTERNS)))]
        out.append(caption(a, t, m))
    return out


def _index(name, attrs_list):
    return torch.tensor([ATTRIBUTE_VALUES[name].index(getattr(a, name)) for a in attrs_list])


def test_judge_agrees_with_the_renderer_on_every_combo_and_shift(world, judge):
    attrs_list, shifts, images = [], [], []
    for a, s in itertools.product(all_attributes(), world.shifts):
        attrs_list.append(a)
        shifts.append(s)
        images.append(torch.from_numpy(world.render(a, s)))
    images = torch.stack(images)
    out = judge(images, _prompts_for(attrs_list, np.random.default_rng(0)))
    for name in ATTRIBUTE_NAMES:
        assert torch.equal(out[name], _index(name, attrs_list)), name
    assert torch.equal(out["shift"], torch.tensor(shifts))
    assert float(out["realism"].min()) > 0.999 and float(out["fidelity"].min()) == 1.0
    assert float(out["gold"].min()) > 0.999


def test_judge_on_fresh_random_samples_and_mild_noise(world, judge):
    rng = np.random.default_rng(5)
    images, attrs_list = world.sample(400, rng)
    prompts = _prompts_for(attrs_list, rng)
    out = judge(images, prompts)
    assert float(out["realism"].min()) > 0.9 and float(out["fidelity"].min()) == 1.0
    noisy = (images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    out = judge(noisy, prompts)
    for name in ATTRIBUTE_NAMES:
        assert torch.equal(out[name], _index(name, attrs_list)), name
    assert 0.3 < float(out["realism"].min()) and float(out["realism"].max()) < 0.8
    assert float(out["realism"].mean()) == pytest.approx(math.exp(-(0.05**2) / DEFAULT_TAU), abs=0.05)


def test_noise_and_flat_images_get_no_gold(world, judge):
    rng = np.random.default_rng(1)
    _, attrs_list = world.sample(64, rng)
    prompts = _prompts_for(attrs_list, rng)
    g = torch.Generator().manual_seed(1)
    for images in (
        torch.rand(64, 3, 32, 32, generator=g),
        torch.randn(64, 3, 32, 32, generator=g),
        torch.full((64, 3, 32, 32), 0.5),
        torch.zeros(64, 3, 32, 32),
        torch.ones(64, 3, 32, 32),
    ):
        assert float(judge(images, prompts)["gold"].max()) < 0.05


def test_wrong_attributes_lower_fidelity_by_the_right_fraction(world, judge):
    img = torch.from_numpy(world.render(Attributes("circle", "red", "large", "left")))[None].repeat(6, 1, 1, 1)
    prompts = [
        "a large red circle on the left",
        "a blue circle",
        "a large blue circle on the left",
        "on the right, a small blue square",
        "a red circle, small",
        "an image of a yellow triangle",
    ]
    out = judge(img, prompts)
    np.testing.assert_allclose(out["fidelity"].numpy(), [1.0, 0.5, 0.75, 0.0, 2 / 3, 0.0])
    np.testing.assert_allclose(out["gold"].numpy(), out["fidelity"].numpy() * out["realism"].numpy())
    assert float(out["realism"].min()) > 0.999


def test_judge_matches_a_brute_force_reference(world):
    """Nearest template and mse against a float64 loop over the bank; chunking must not matter."""
    bank, combo, shifts = world.template_bank()
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(len(bank), (10, 2), generator=g)
    w = torch.rand(10, 1, 1, 1, generator=g)
    images = w * bank[idx[:, 0]] + (1 - w) * bank[idx[:, 1]] + 0.1 * torch.randn(10, 3, 32, 32, generator=g)
    images[0, 1, 5, 7] = torch.nan  # non-finite: realism 0
    judge = GoldJudge(world, tau=0.01, chunk_size=3)
    prompts = ["a red circle"] * 10
    out = judge(images, prompts)
    clean = torch.nan_to_num(images, nan=0.5).double().reshape(10, -1)
    ref_mse = ((clean[:, None, :] - bank.double().reshape(1, len(bank), -1)) ** 2).mean(-1)
    ref_best = ref_mse.argmin(1)
    assert torch.equal(out["template"], ref_best)
    np.testing.assert_allclose(out["mse"].numpy(), ref_mse.min(1).values.numpy(), rtol=1e-5)
    expected_realism = torch.exp(-ref_mse.min(1).values / 0.01)
    expected_realism[0] = 0.0
    np.testing.assert_allclose(out["realism"].numpy(), expected_realism.numpy(), rtol=1e-4, atol=1e-12)
    attrs = all_attributes()
    for i in range(10):
        a = attrs[combo[int(ref_best[i])]]
        assert SHAPES[int(out["shape"][i])] == a.shape and COLOR_NAMES[int(out["color"][i])] == a.color
    assert not bool(out["finite"][0]) and float(out["gold"][0]) == 0.0


def test_judge_on_a_smaller_world_and_bad_input():
    w = World(image_size=16)
    j = GoldJudge(w)
    images, attrs_list = w.sample(120, np.random.default_rng(0))
    out = j(images, [caption(a) for a in attrs_list])
    assert float(out["gold"].min()) > 0.99
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        j(torch.zeros(2, 3, 32, 32), ["a red circle"] * 2)
    with pytest.raises(ValueError, match="one prompt per image"):
        j(images[:2], ["a red circle"])
    with pytest.raises(ValueError, match="only scores sandbox prompts"):
        j(images[:1], ["a photo of an astronaut riding a horse"])
    with pytest.raises(ValueError, match="tau"):
        GoldJudge(w, tau=0.0)
