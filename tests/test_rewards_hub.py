"""The six hub scorers (rocm_rlhf.rewards.hub) on tiny random models of the same architectures, built and saved here
and loaded through the scorers' own loading code (local paths as model_id). No network, no hub downloads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import re
import textwrap

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

import _tiny_models as tm  # noqa: E402  (tests/ is on sys.path under pytest's default import mode)

from rocm_rlhf.infra.hub import hf_file  # noqa: E402
from rocm_rlhf.rewards import available, load_scorer  # noqa: E402
from rocm_rlhf.rewards import _hub_common as hc  # noqa: E402
from rocm_rlhf.rewards import hub as hub_scorers  # noqa: E402

NAMES = ["pickscore", "clipscore", "hpsv2", "aesthetic", "blipscore", "imagereward"]
LONG = "a red car parked in front of a blue house on a sunny day, " * 12  # > 77 CLIP and > 35 BERT tokens
PROMPTS = ["a photo of a cat", LONG, "the green dog"]

# Preprocessing tolerance against the PIL reference processors, in 8-bit grey levels (1/255 before normalisation):
# PIL resizes in two separable passes and rounds to uint8 after each; we resize in float in one go. On a natural
# looking image the difference is at most about one grey level (measured: max 1.1, mean 0.3).
MAX_GREY_LEVELS = 1.5
MEAN_GREY_LEVELS = 0.4
# HPSv2's reference resizes a float tensor (no 8-bit rounding); PIL's 32-bit float ("F") images resize with the same
# antialiased bicubic kernel, so the two agree to float32 rounding (measured: max 2.3e-5 grey levels).
LETTERBOX_GREY_LEVELS = 1e-3
# the parameters each scorer keeps in float32 under 16-bit weights (name prefixes)
KEPT_FLOAT32 = {
    "pickscore": ("model.logit_scale",),
    "clipscore": ("model.logit_scale",),
    "hpsv2": ("model.logit_scale",),
    "aesthetic": ("head.",),
    "blipscore": (),
    "imagereward": ("net.head.",),
}


# ---------------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from transformers import BertTokenizer

    root = tmp_path_factory.mktemp("hub_scorers")
    clip = tm.make_tiny_clip(root / "clip")
    blip = tm.make_tiny_blip(root / "blip")
    ids = tm.write_clip_tokenizer(root / "cliptok")
    hps_sd = tm.make_openclip_state_dict(ids["vocab_size"], seed=1)
    # as a training checkpoint: wrapped in {"state_dict": ...}, DDP "module." prefix, extra non-tensor entries
    torch.save({"state_dict": {"module." + k: v for k, v in hps_sd.items()}, "epoch": 3}, root / "hps.pt")
    bert = root / "bert"
    tm.write_bert_vocab(bert)
    n_vocab = len(BertTokenizer.from_pretrained(bert)) + 2  # + BLIP's [DEC] and [ENC]
    ir_sd = tm.make_imagereward_state_dict(n_vocab, seed=2)
    (root / "ir").mkdir()
    torch.save(ir_sd, root / "ir" / "ImageReward.pt")  # a folder holding the default file name
    aes_sd = tm.make_aesthetic_head(root / "aes.pth", widths=(16, 24, 8, 8, 4, 1))
    kwargs = {
        "pickscore": dict(model_id=str(clip), processor_id=str(clip)),
        "clipscore": dict(model_id=str(clip)),
        "hpsv2": dict(
            model_id=str(root / "hps.pt"), tokenizer_id=str(root / "cliptok"), vision_num_heads=3, text_num_heads=2
        ),
        "aesthetic": dict(model_id=str(root / "aes.pth"), clip_model_id=str(clip)),
        "blipscore": dict(model_id=str(blip)),
        "imagereward": dict(model_id=str(root / "ir"), tokenizer_id=str(bert), vision_num_heads=3, text_num_heads=2),
    }
    return dict(root=root, clip=clip, blip=blip, hps_sd=hps_sd, ir_sd=ir_sd, aes_sd=aes_sd, kwargs=kwargs)


@pytest.fixture(scope="module")
def scorers(assets):
    return {name: load_scorer(name, **assets["kwargs"][name]) for name in NAMES}


def _images(n=3, h=40, w=48, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (0.2 + 0.6 * torch.rand(n, 3, h, w, generator=g)).to(dtype)


def _sample_image(h, w, seed=0) -> np.ndarray:
    """A natural-looking 8-bit RGB test image: smooth colour waves, mild noise, one flat block with sharp edges."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack(
        [0.5 + 0.4 * np.sin(25 * xx + 9 * yy), 0.5 + 0.4 * np.cos(40 * yy * xx + 1), 0.2 + 0.3 * (xx + yy)], -1
    )
    img += 0.03 * rng.standard_normal((h, w, 3))
    img[h // 3 : h // 2, w // 4 : w // 2] = [0.9, 0.1, 0.1]
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _grey_levels(ours: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """|difference| of normalised images, expressed in 8-bit grey levels of the unnormalised image."""
    std = torch.tensor(hc.CLIP_STD, dtype=torch.float64).view(3, 1, 1)
    return ((ours.double() - ref.double()).abs() * std * 255).flatten()


def _letterbox_reference(arr: np.ndarray, size: int) -> torch.Tensor:
    """hpsv2.score's eval transform (its open_clip's ToTensor, ResizeMaxSize(size, fill=0), Normalize with OpenAI
    CLIP's mean/std) in PIL and numpy: each channel as a float PIL image resized with PIL's bicubic to
    round(side * size / longest), then zero padding, pad // 2 on the top / left and the rest on the bottom / right."""
    from PIL import Image

    h, w = arr.shape[:2]
    scale = size / float(max(h, w))
    new_h, new_w = round(h * scale), round(w * scale)
    f = arr.astype(np.float32) / 255
    channels = [
        np.asarray(Image.fromarray(f[..., c], mode="F").resize((new_w, new_h), Image.Resampling.BICUBIC))
        for c in range(3)
    ]
    img = np.stack(channels, -1).astype(np.float64)
    pad_h, pad_w = size - new_h, size - new_w
    img = np.pad(img, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    img = (img - np.array(hc.CLIP_MEAN)) / np.array(hc.CLIP_STD)
    return torch.from_numpy(img.transpose(2, 0, 1).copy())


def _processor(kind: str, size: int):
    from transformers import BlipImageProcessorPil, CLIPImageProcessorPil
    from transformers.image_utils import PILImageResampling

    if kind == "clip":
        return CLIPImageProcessorPil(
            size={"shortest_edge": size},
            crop_size={"height": size, "width": size},
            resample=PILImageResampling.BICUBIC,
            image_mean=hc.CLIP_MEAN,
            image_std=hc.CLIP_STD,
        )
    return BlipImageProcessorPil(
        size={"height": size, "width": size},
        resample=PILImageResampling.BICUBIC,
        image_mean=hc.CLIP_MEAN,
        image_std=hc.CLIP_STD,
    )


# ---------------------------------------------------------------------------------------------------------------
# registry, definitions, loading


def test_registry_lists_the_six_with_pinned_definitions(scorers):
    assert set(NAMES) <= set(available())
    for name, scorer in scorers.items():
        cls = type(scorer)
        assert scorer.name == name
        assert cls.definition.startswith(name + ":")
        default_id = cls.HUB_ASSETS[0][0]
        assert default_id in cls.definition, (name, default_id)
        assert "\n" not in cls.definition
    # the module docstring carries the table of all six
    for name in NAMES:
        assert f"| {name} |" in hub_scorers.__doc__


def test_hf_file_local_paths(tmp_path):
    f = tmp_path / "weights.pt"
    f.write_bytes(b"x")
    assert hf_file(f, "ignored.pt") == str(f)
    assert hf_file(tmp_path, "weights.pt") == str(f)
    with pytest.raises(FileNotFoundError, match="has no file 'other.pt'"):
        hf_file(tmp_path, "other.pt")
    with pytest.raises(FileNotFoundError, match="no local file or folder"):
        hf_file(tmp_path / "missing.pt", "missing.pt")


def test_offline_and_missing_raises_model_not_available_naming_the_id(tmp_path):
    """With HF_HUB_OFFLINE=1 and an empty HF cache (HF_HOME in tmp_path), every scorer's default load fails with
    ModelNotAvailableError naming its model id. Run in a subprocess: huggingface_hub reads its env at import."""
    script = textwrap.dedent("""
        import json
        from rocm_rlhf.infra.hub import ModelNotAvailableError, hf_file
        from rocm_rlhf.rewards import load_scorer
        out = {}
        for name in %r:
            try:
                load_scorer(name)
                out[name] = "LOADED"
            except ModelNotAvailableError as err:
                out[name] = str(err)
        try:
            hf_file("xswu/HPSv2", "HPS_v2.1_compressed.pt")
            out["hf_file"] = "LOADED"
        except ModelNotAvailableError as err:
            out["hf_file"] = str(err)
        print(json.dumps(out))
        """ % NAMES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {
        "pickscore": "yuvalkirstain/PickScore_v1",
        "clipscore": "openai/clip-vit-large-patch14",
        "hpsv2": "xswu/HPSv2",
        "aesthetic": "camenduru/improved-aesthetic-predictor",
        "blipscore": "Salesforce/blip-itm-large-coco",
        "imagereward": "THUDM/ImageReward",
        "hf_file": "xswu/HPSv2",
    }
    # the staging hint names the download command of the installed huggingface_hub, the repo and, for a single file,
    # the file
    commands = {
        "pickscore": "hf download yuvalkirstain/PickScore_v1",
        "clipscore": "hf download openai/clip-vit-large-patch14",
        "hpsv2": "hf download xswu/HPSv2 HPS_v2.1_compressed.pt",
        "aesthetic": "hf download camenduru/improved-aesthetic-predictor sac+logos+ava1-l14-linearMSE.pth",
        "blipscore": "hf download Salesforce/blip-itm-large-coco",
        "imagereward": "hf download THUDM/ImageReward ImageReward.pt",
        "hf_file": "hf download xswu/HPSv2 HPS_v2.1_compressed.pt",
    }
    for name, model_id in expected.items():
        msg = out[name]
        assert f"model '{model_id}'" in msg, (name, msg)
        assert "HF_HUB_OFFLINE=1" in msg and f"`{commands[name]}`" in msg, (name, msg)
        assert "huggingface-cli" not in msg, (name, msg)


def test_staging_hint_names_a_command_of_the_installed_huggingface_hub(monkeypatch):
    """``hf download REPO [FILE]`` exists in the installed huggingface_hub (huggingface-cli is gone from 1.0 on), and
    preflight names one download per missing asset."""
    from rocm_rlhf.infra import hub, staging

    cmd = hub.download_command("xswu/HPSv2", "HPS_v2.1_compressed.pt")
    assert cmd == "hf download xswu/HPSv2 HPS_v2.1_compressed.pt"
    exe = shutil.which("hf", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    assert exe is not None, "huggingface_hub's hf command is not installed"
    help_text = subprocess.run([exe, "download", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "REPO_ID" in help_text and "FILENAMES" in help_text
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(staging, "_cached", lambda repo, filename: False)
    with pytest.raises(hub.ModelNotAvailableError) as err:
        staging.preflight([("xswu/HPSv2", "HPS_v2.1_compressed.pt"), ("openai/clip-vit-large-patch14", None)])
    msg = str(err.value)
    assert "`hf download xswu/HPSv2 HPS_v2.1_compressed.pt`; `hf download openai/clip-vit-large-patch14`" in msg
    assert "stage_models" in msg and "HF_HUB_OFFLINE=1" in msg


def test_bad_inputs_give_one_clear_error(scorers):
    s = scorers["pickscore"]
    x = _images(2)
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        s(x, ["one"])
    with pytest.raises(ValueError, match="list of B strings"):
        s(x, "a cat")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        s(x[0], ["a", "b"])
    with pytest.raises(ValueError, match="divide uint8 images by 255"):
        s((x * 255).to(torch.uint8), ["a", "b"])
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        hc.parse_dtype("float8")
    assert hc.parse_dtype("bf16") is torch.bfloat16 and hc.parse_dtype(None) is torch.float32


# ---------------------------------------------------------------------------------------------------------------
# behaviour common to all six


@pytest.mark.parametrize("name", NAMES)
def test_scores_finite_shape_and_nonzero_pixel_gradients(scorers, name):
    s = scorers[name]
    x = _images(3).requires_grad_(True)
    out = s(x, PROMPTS)
    assert out.shape == (3,) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all()
    per_image = grad.flatten(1).norm(dim=1)
    assert (per_image > 0).all(), per_image
    # weights are frozen and stay so; the module stays in eval mode even when asked to train
    assert not any(p.requires_grad for p in s.parameters())
    s.train()
    assert not any(m.training for m in s.modules())


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_central_difference_float64(assets, name):
    s = load_scorer(name, dtype="float64", **assets["kwargs"][name])
    x = _images(1, seed=3, dtype=torch.float64).requires_grad_(True)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    prompts = PROMPTS[:1]
    out = s(x, prompts)
    assert out.dtype == torch.float64
    (grad,) = torch.autograd.grad(out.sum(), x)
    analytic = (grad * v).sum().item()
    h = 1e-6
    with torch.no_grad():
        numeric = ((s(x + h * v, prompts) - s(x - h * v, prompts)) / (2 * h)).item()
    assert analytic != 0.0
    assert numeric == pytest.approx(analytic, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_weights_give_close_float32_scores(assets, scorers, name):
    s16 = load_scorer(name, dtype="bfloat16", **assets["kwargs"][name])
    for pname, p in s16.named_parameters():
        kept = pname.startswith(KEPT_FLOAT32[name])
        assert p.dtype == (torch.float32 if kept else torch.bfloat16), (pname, p.dtype)
    assert s16.dtype == torch.bfloat16
    x = _images(2, seed=6)
    with torch.no_grad():
        out16, out32 = s16(x, PROMPTS[:2]), scorers[name](x, PROMPTS[:2])
    assert out16.dtype == torch.float32 and torch.isfinite(out16).all()
    scale = out32.abs().max().item() + 1e-3
    assert (out16 - out32).abs().max().item() < 0.1 * scale


@pytest.mark.parametrize("name", NAMES)
def test_identical_inputs_identical_scores_and_batch_equals_single(scorers, name):
    s = scorers[name]
    a, b = _images(2, seed=5)
    x = torch.stack([a, b, a])
    prompts = [PROMPTS[0], LONG, PROMPTS[0]]
    with torch.no_grad():
        batch = s(x, prompts)
        singles = torch.cat([s(x[i : i + 1], prompts[i : i + 1]) for i in range(3)])
        again = s(x, prompts)
    torch.testing.assert_close(batch[0], batch[2], rtol=0, atol=1e-6)
    torch.testing.assert_close(batch, singles, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch, again, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# preprocessing against the reference PIL processors


@pytest.mark.parametrize("kind,size", [("clip", 224), ("blip", 384)])
@pytest.mark.parametrize("hw", [(300, 257), (150, 120)])  # downsampling with a crop, and upsampling
def test_torch_preprocessing_matches_reference_processor(kind, size, hw):
    from PIL import Image

    arr = _sample_image(*hw)
    ref = torch.from_numpy(
        np.asarray(_processor(kind, size)(Image.fromarray(arr), return_tensors="np")["pixel_values"][0])
    )
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].double() / 255
    ours = (hc.clip_preprocess if kind == "clip" else hc.blip_preprocess)(x, size)[0]
    assert ours.shape == ref.shape == (3, size, size)
    diff = _grey_levels(ours, ref)
    assert diff.max() <= MAX_GREY_LEVELS and diff.mean() <= MEAN_GREY_LEVELS, (diff.max(), diff.mean())


def test_preprocessing_tolerance_would_catch_wrong_settings():
    """The tolerance is tight enough to reject bilinear resizing and a crop off by one pixel."""
    from PIL import Image

    import torch.nn.functional as F

    arr = _sample_image(300, 257)
    ref = torch.from_numpy(
        np.asarray(_processor("clip", 224)(Image.fromarray(arr), return_tensors="np")["pixel_values"][0])
    )
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].double() / 255
    resized = hc.resize_shortest_side(x, 224).clamp(0, 1)
    top, left = (resized.shape[-2] - 224) // 2 + 1, (resized.shape[-1] - 224) // 2  # one row lower
    shifted = hc.normalize(resized[..., top : top + 224, left : left + 224])[0]
    bilinear = F.interpolate(x, size=resized.shape[-2:], mode="bilinear", antialias=True).clamp(0, 1)
    bilinear = hc.normalize(hc.center_crop(bilinear, 224))[0]
    for wrong in (shifted, bilinear):
        assert _grey_levels(wrong, ref).max() > 3 * MAX_GREY_LEVELS


@pytest.mark.parametrize("name", NAMES)
def test_each_scorer_preprocesses_like_its_reference_processor(scorers, name):
    from PIL import Image

    s = scorers[name]
    arr = _sample_image(50, 41, seed=7)
    ours = s.preprocess(torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255)[0]
    if name == "hpsv2":  # open_clip's ResizeMaxSize (longest side, zero padding), not the CLIP processor
        diff = _grey_levels(ours, _letterbox_reference(arr, s.image_size))
        assert diff.max() <= LETTERBOX_GREY_LEVELS, diff.max()
        return
    kind = "blip" if name == "blipscore" else "clip"
    ref = torch.from_numpy(
        np.asarray(_processor(kind, s.image_size)(Image.fromarray(arr), return_tensors="np")["pixel_values"][0])
    )
    diff = _grey_levels(ours, ref)
    assert diff.max() <= MAX_GREY_LEVELS and diff.mean() <= MEAN_GREY_LEVELS, (diff.max(), diff.mean())


# (40, 64) / (64, 40): upsampled, padded evenly; (50, 64): odd padding (24 rows on top, 25 below); (39, 64): the short
# side is 136.5 before rounding (Python's round gives 136); (300, 257): downsampled
@pytest.mark.parametrize("hw", [(40, 64), (64, 40), (50, 64), (39, 64), (300, 257)])
def test_hpsv2_preprocessing_is_open_clip_resize_max_size(hw):
    arr = _sample_image(*hw)
    ref = _letterbox_reference(arr, 224)
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].double() / 255
    ours = hc.letterbox_preprocess(x, 224)[0]
    assert ours.shape == ref.shape == (3, 224, 224)
    assert _grey_levels(ours, ref).max() <= LETTERBOX_GREY_LEVELS
    # the padding is black before normalisation, where the reference puts it
    black = hc.normalize(torch.zeros(1, 3, 1, 1, dtype=torch.float64))[0, :, 0, 0]
    h, w = hw
    scale = 224 / max(h, w)
    new_h, new_w = round(h * scale), round(w * scale)
    top, left = (224 - new_h) // 2, (224 - new_w) // 2
    inside = torch.zeros(224, 224, dtype=torch.bool)
    inside[top : top + new_h, left : left + new_w] = True
    assert torch.equal(ours[:, ~inside], black[:, None].expand(3, int((~inside).sum())))
    # the old preprocessing (shortest side + centre crop) is far outside the tolerance
    assert _grey_levels(hc.clip_preprocess(x, 224, clamp=False)[0], ref).max() > 50


def test_hpsv2_preprocessing_tolerance_would_catch_wrong_settings():
    """One row of padding moved from the bottom to the top, int() instead of round(), torch's default bicubic kernel
    (a = -0.75, what F.interpolate uses without antialias) are each far outside the tolerance."""
    import torch.nn.functional as F

    for hw, wrong in (
        ((50, 64), lambda x: hc.normalize(F.pad(hc.resize_longest_side(x, 224), (0, 0, 25, 24)))),
        (
            (39, 64),
            lambda x: hc.normalize(
                hc.pad_to_square(F.interpolate(x, size=(137, 224), mode="bicubic", antialias=True), 224)
            ),
        ),
        ((40, 64), lambda x: hc.normalize(hc.pad_to_square(F.interpolate(x, size=(140, 224), mode="bicubic"), 224))),
    ):
        arr = _sample_image(*hw)
        x = torch.from_numpy(arr).permute(2, 0, 1)[None].double() / 255
        ref = _letterbox_reference(arr, 224)
        assert _grey_levels(wrong(x)[0], ref).max() > 1000 * LETTERBOX_GREY_LEVELS, hw


# ---------------------------------------------------------------------------------------------------------------
# the score formulas against independent computations


def test_pickscore_and_clipscore_against_clipmodel_forward(assets, scorers):
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(assets["clip"]).eval()
    pick, clip = scorers["pickscore"], scorers["clipscore"]
    x = _images(3, seed=8)
    ids, mask = pick.tokenize(PROMPTS)
    assert ids.shape == (3, 77)
    assert ids[1, -1].item() == pick.tokenizer.eos_token_id  # the long prompt is truncated, eos kept
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pick.preprocess(x))
        logits = out.logits_per_image.diagonal()  # logit_scale.exp() * cos(image_i, text_i)
        cos = logits / model.logit_scale.exp()
        torch.testing.assert_close(pick(x, PROMPTS), logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(clip(x, PROMPTS), 100 * cos.clamp(min=0), rtol=1e-5, atol=1e-4)
    assert (cos > 0).all()  # the tiny model is built so: otherwise the clipscore gradient test would be vacuous


def test_clipscore_clamps_negative_cosine_to_zero(scorers):
    clip = scorers["clipscore"]
    x = _images(2, seed=9)
    with torch.no_grad():
        cos = clip.cosine(x, PROMPTS[:2])
        # flip the sign of the cosine by negating the visual projection: the score must become 0
        clip.model.visual_projection.weight.neg_()
        try:
            flipped = clip(x, PROMPTS[:2])
        finally:
            clip.model.visual_projection.weight.neg_()
    assert (cos > 0).all()
    assert torch.equal(flipped, torch.zeros(2))


def test_aesthetic_is_head_of_normalised_clip_image_embedding(assets, scorers):
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(assets["clip"]).eval()
    sd = assets["aes_sd"]
    s = scorers["aesthetic"]
    x = _images(3, seed=10)
    with torch.no_grad():
        emb = model.get_image_features(pixel_values=s.preprocess(x))
        emb = emb if isinstance(emb, torch.Tensor) else emb.pooler_output
        h = emb / emb.norm(dim=-1, keepdim=True)
        for idx in (0, 2, 4, 6, 7):  # the MLP has no activations: affine layers in sequence
            h = h @ sd[f"layers.{idx}.weight"].t() + sd[f"layers.{idx}.bias"]
        torch.testing.assert_close(s(x, None), h.squeeze(-1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s(x, PROMPTS), s(x, ["other"] * 3))  # prompts ignored


def test_blipscore_is_itc_cosine_of_transformers_retrieval_model(assets, scorers):
    from transformers import BlipForImageTextRetrieval

    model = BlipForImageTextRetrieval.from_pretrained(assets["blip"]).eval()
    s = scorers["blipscore"]
    x = _images(3, seed=11)
    ids, mask = s.tokenize(PROMPTS)
    assert ids.shape == (3, 35) and (ids[:, 0] == s.tokenizer.cls_token_id).all()
    with torch.no_grad():
        itc = model(input_ids=ids, attention_mask=mask, pixel_values=s.preprocess(x), use_itm_head=False).itm_score
        torch.testing.assert_close(s(x, PROMPTS), itc.diagonal(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# key mappings against plain-torch reimplementations of the original architectures


def test_hpsv2_openclip_mapping_matches_openclip_forward(assets):
    s = load_scorer("hpsv2", dtype=torch.float64, **assets["kwargs"]["hpsv2"])
    sd = assets["hps_sd"]
    x = _images(3, seed=12, dtype=torch.float64)
    pixels = s.preprocess(x)
    ids, _ = s.tokenize(PROMPTS)
    with torch.no_grad():
        img_ref, txt_ref = tm.openclip_reference(sd, pixels, ids, v_heads=3, t_heads=2)
        img = s.model.get_image_features(pixel_values=pixels)
        img = img if isinstance(img, torch.Tensor) else img.pooler_output
        txt = s.model.get_text_features(input_ids=ids, attention_mask=torch.ones_like(ids))
        txt = txt if isinstance(txt, torch.Tensor) else txt.pooler_output
        torch.testing.assert_close(img, img_ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(txt, txt_ref, rtol=1e-10, atol=1e-10)
        cos = torch.nn.functional.cosine_similarity(img_ref, txt_ref, dim=-1)
        torch.testing.assert_close(s(x, PROMPTS), cos, rtol=1e-10, atol=1e-10)
    assert s.model.logit_scale.item() == pytest.approx(sd["logit_scale"].item())
    cfg = s.model.config
    assert (cfg.vision_config.hidden_act, cfg.text_config.hidden_act) == ("gelu", "gelu")
    assert cfg.vision_config.image_size == 32 and cfg.vision_config.patch_size == 8


def test_openclip_mapping_rejects_other_layouts(assets):
    from rocm_rlhf.rewards._hub_openclip import clip_config_from_openclip, openclip_to_clip_state_dict

    sd = dict(assets["hps_sd"])
    sd["visual.attn_pool.query"] = torch.zeros(4, 24)
    with pytest.raises(ValueError, match=r"1 unknown keys \(visual\.attn_pool\.query\)"):
        openclip_to_clip_state_dict(sd)
    with pytest.raises(ValueError, match="not divisible by vision_num_heads=5"):
        clip_config_from_openclip(
            sd, vision_num_heads=5, text_num_heads=2, bos_token_id=0, eos_token_id=1, pad_token_id=1
        )


def test_imagereward_blip_mapping_matches_blip_forward(assets):
    s = load_scorer("imagereward", dtype=torch.float64, **assets["kwargs"]["imagereward"])
    x = _images(3, seed=13, dtype=torch.float64)
    pixels = s.preprocess(x)
    ids, mask = s.tokenize(PROMPTS)
    tok = s.tokenizer
    # BLIP's tokenizer: [DEC] bos and [ENC] added; ImageReward keeps [CLS] as the first token; 35 tokens
    n_bert = len((assets["root"] / "bert" / "vocab.txt").read_text().split())
    assert tok.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [n_bert, n_bert + 1]  # 30522, 30523 for bert-base
    assert tok.bos_token_id == n_bert
    assert ids.shape == (3, 35) and (ids[:, 0] == tok.cls_token_id).all()
    assert mask[1].all() and not mask[0].all()  # the long prompt fills all 35, the short one is padded
    with torch.no_grad():
        r = tm.imagereward_reference(assets["ir_sd"], pixels, ids, mask, v_heads=3, t_heads=2)
        expected = (r - 0.16717362830052426) / 1.0333394966054072
        torch.testing.assert_close(s(x, PROMPTS), expected, rtol=1e-9, atol=1e-9)
    assert s.net.vision_model.config.layer_norm_eps == 1e-6  # BLIP's ViT, not transformers' default 1e-5


def test_imagereward_mapping_rejects_unknown_keys(assets):
    from rocm_rlhf.rewards._hub_blip import imagereward_to_blip_state_dict

    sd = dict(assets["ir_sd"])
    sd["blip.text_decoder.cls.predictions.bias"] = torch.zeros(3)
    with pytest.raises(ValueError, match="unknown keys"):
        imagereward_to_blip_state_dict(sd)
    sd = dict(assets["ir_sd"])
    del sd["mlp.layers.7.weight"]
    path = assets["root"] / "ir_broken.pt"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"MLP head weights not found.*head\.layers\.7\.weight"):
        load_scorer("imagereward", **dict(assets["kwargs"]["imagereward"], model_id=str(path)))


def test_pt_loading_is_weights_only(assets, tmp_path):
    """A checkpoint holding arbitrary Python objects is refused with a clear hint (torch.load weights_only)."""
    import argparse

    path = tmp_path / "ImageReward.pt"
    torch.save({"state_dict": dict(assets["ir_sd"]), "args": argparse.Namespace(lr=1e-5)}, path)
    kw = dict(assets["kwargs"]["imagereward"], model_id=str(path))
    with pytest.raises(ValueError, match="weights_only=False"):
        load_scorer("imagereward", **kw)
    assert load_scorer("imagereward", weights_only=False, **kw)(_images(1), ["a cat"]).shape == (1,)


# ---------------------------------------------------------------------------------------------------------------
# 16-bit weights: the logit scale and the MLP heads stay float32


def _head_f32(sd, prefix, x):
    """The affine MLP head from its float32 state dict, in float32."""
    h = x.float()
    for idx in (0, 2, 4, 6, 7):
        h = h @ sd[f"{prefix}{idx}.weight"].float().t() + sd[f"{prefix}{idx}.bias"].float()
    return h.squeeze(-1)


def test_bfloat16_scorers_keep_logit_scale_float32(assets):
    from transformers import CLIPModel

    clip_scale = CLIPModel.from_pretrained(assets["clip"]).logit_scale.detach()
    assert clip_scale.dtype == torch.float32
    x = _images(2, seed=14)
    for name, scale in (
        ("pickscore", clip_scale),
        ("clipscore", clip_scale),
        ("hpsv2", assets["hps_sd"]["logit_scale"]),
    ):
        s = load_scorer(name, dtype=torch.bfloat16, **assets["kwargs"][name])
        assert s.model.logit_scale.dtype == torch.float32, name
        assert torch.equal(s.model.logit_scale.detach(), scale), name  # not rounded through bfloat16
        assert s.model.visual_projection.weight.dtype == torch.bfloat16
        if name == "pickscore":
            with torch.no_grad():
                torch.testing.assert_close(s(x, PROMPTS[:2]), scale.exp() * s.cosine(x, PROMPTS[:2]), rtol=1e-6, atol=0)


def test_bfloat16_aesthetic_head_is_float32_on_the_same_embedding(assets):
    s = load_scorer("aesthetic", dtype=torch.bfloat16, **assets["kwargs"]["aesthetic"])
    assert all(p.dtype == torch.float32 for p in s.head.parameters())
    assert all(p.dtype == torch.bfloat16 for p in s.clip.parameters())
    x = _images(3, seed=15)
    with torch.no_grad():
        emb = hc.features(s.clip.get_image_features(pixel_values=s.preprocess(x))).float()
        emb = emb / emb.norm(dim=-1, keepdim=True)
        torch.testing.assert_close(s(x, None), _head_f32(assets["aes_sd"], "layers.", emb), rtol=1e-6, atol=1e-6)


def test_bfloat16_imagereward_head_is_float32_on_the_same_embedding(assets):
    s = load_scorer("imagereward", dtype=torch.bfloat16, **assets["kwargs"]["imagereward"])
    assert all(p.dtype == torch.float32 for p in s.net.head.parameters())
    assert s.net.text_encoder.embeddings.word_embeddings.weight.dtype == torch.bfloat16
    seen = []
    hook = s.net.head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            out = s(_images(3, seed=16), PROMPTS)
    finally:
        hook.remove()
    (cls,) = seen  # the [CLS] output of the bfloat16 text encoder
    assert cls.dtype == torch.bfloat16
    r = _head_f32(assets["ir_sd"], "mlp.layers.", cls)
    torch.testing.assert_close(
        out, (r - hub_scorers.IMAGEREWARD_MEAN) / hub_scorers.IMAGEREWARD_STD, rtol=1e-6, atol=1e-6
    )


# ---------------------------------------------------------------------------------------------------------------
# generators: from_pretrained in the requested dtype


def test_pipeline_dtype_keyword_by_diffusers_version():
    """diffusers 0.31-0.39 read only torch_dtype (dtype= is dropped, the weights load float32); 0.40 reads dtype and
    deprecates torch_dtype."""
    from rocm_rlhf.models import pipeline_dtype_kwargs

    bf16 = torch.bfloat16
    for version, key in (
        ("0.31.0", "torch_dtype"),
        ("0.39.0", "torch_dtype"),
        ("0.40.0", "dtype"),
        ("0.42.1", "dtype"),
    ):
        assert pipeline_dtype_kwargs(bf16, version) == {key: bf16}, version


@pytest.mark.parametrize("loader", ["load_lcm_pipeline", "load_sd_pipeline"])
def test_pipelines_load_in_the_requested_dtype_without_warnings(tiny_lcm_dir, loader):
    import logging
    import warnings

    from rocm_rlhf import models

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("diffusers")  # diffusers' loggers do not propagate to the root logger
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe = getattr(models, loader)(tiny_lcm_dir, dtype=torch.bfloat16)
    finally:
        logger.removeHandler(handler)
    for part in ("unet", "vae", "text_encoder"):
        dtypes = {p.dtype for p in getattr(pipe, part).parameters()}
        assert dtypes == {torch.bfloat16}, (part, dtypes)
    messages = [str(w.message) for w in caught] + [r.getMessage() for r in records]
    assert not [m for m in messages if "dtype" in m], messages


def test_a_mistyped_local_model_path_is_reported_as_a_path_not_a_hub_id(tmp_path):
    """results/models/sandboxx/lcm cannot be a hub id (org/name): the old code told the user to download it."""
    from diffusers import LatentConsistencyModelPipeline

    from rocm_rlhf.infra.hub import from_pretrained, is_path_like

    for ref in ("results/models/sandboxx/lcm", "./lcm", "~/models/lcm", str(tmp_path / "nope")):
        assert is_path_like(ref)
        with pytest.raises(FileNotFoundError, match=f"no local file or folder '{re.escape(ref)}' \\(a path"):
            from_pretrained(LatentConsistencyModelPipeline, ref)
    assert not is_path_like("SimianLuo/LCM_Dreamshaper_v7") and not is_path_like("gpt2")
