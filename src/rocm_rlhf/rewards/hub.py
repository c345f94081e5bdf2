"""The paper's six metrics as differentiable scorers of hub checkpoints, each with one pinned definition.

Registered names: | pickscore | clipscore | hpsv2 | aesthetic | blipscore | imagereward | (:class:`PickScore`,
:class:`CLIPScore`, :class:`HPSv2`, :class:`AestheticScore`, :class:`BLIPScore`, :class:`ImageReward`). Each takes
images in [0, 1] (B, 3, H, W) and B prompts and returns (B,) scores, differentiable to the pixels, with frozen weights;
``model_id`` (a hub id, default the pinned one, or a local folder / file) and ``dtype`` choose the weights,
``HUB_ASSETS`` lists what staging must fetch and ``definition`` states the score in one line. Checkpoints,
preprocessing, score formulas and the choices pinned where the literature differs: docs/method.md, section 'Rewards
and metrics' (The definitions).
"""

from __future__ import annotations


import torch

from ..infra import hub
from . import register
from ._hub_common import (
    FrozenScorer,
    MLPHead,
    at_least_f32,
    blip_preprocess,
    build_with_weights,
    check_inputs,
    clip_preprocess,
    features,
    letterbox_preprocess,
    load_checkpoint,
)

LAION_H14 = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
CLIP_L14 = "openai/clip-vit-large-patch14"
CLIP_MAX_TOKENS = 77
BLIP_MAX_TOKENS = 35
IMAGEREWARD_MEAN = 0.16717362830052426
IMAGEREWARD_STD = 1.0333394966054072

__all__ = ["PickScore", "CLIPScore", "HPSv2", "AestheticScore", "BLIPScore", "ImageReward"]


class _CLIPScorer(FrozenScorer):
    """A transformers CLIPModel with its tokenizer: CLIP-style preprocessing at the vision tower's image size; the
    logit scale stays float32 under 16-bit weights."""

    max_tokens = CLIP_MAX_TOKENS
    keep_float32 = ("model.logit_scale",)

    def _setup(self, model, tokenizer, dtype) -> None:
        self.model = model
        self.cast(dtype)
        self.tokenizer = tokenizer
        self.image_size = int(self.model.config.vision_config.image_size)
        self.freeze()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return clip_preprocess(at_least_f32(images), self.image_size).to(self.dtype)

    def cosine(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        check_inputs(images, prompts)
        img = features(self.model.get_image_features(pixel_values=self.preprocess(images)))
        ids, mask = self.tokenize(prompts)
        txt = features(self.model.get_text_features(input_ids=ids, attention_mask=mask))
        img, txt = at_least_f32(img), at_least_f32(txt)
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        return (img * txt).sum(dim=-1)


@register("pickscore")
class PickScore(_CLIPScorer):
    """PickScore v1: ``logit_scale.exp() * cos(image, text)``, as the PickScore reference computes it.

    Args: ``model_id`` (hub id or local folder of a CLIPModel), ``processor_id`` (where the tokenizer comes from: the
    PickScore reference uses the processor of laion/CLIP-ViT-H-14-laion2B-s32B-b79K), ``dtype``.
    """

    definition = (
        "pickscore: yuvalkirstain/PickScore_v1 CLIPModel; resize shortest side 224 bicubic+antialias clipped to [0,1], "
        "center crop 224, CLIP mean/std; tokenizer of laion/CLIP-ViT-H-14-laion2B-s32B-b79K truncated to 77 tokens; "
        "score = logit_scale.exp() * cos(image, text)"
    )
    HUB_ASSETS = (("yuvalkirstain/PickScore_v1", None), (LAION_H14, None))

    def __init__(self, model_id: str = "yuvalkirstain/PickScore_v1", processor_id: str = LAION_H14, dtype=None):
        super().__init__()
        from transformers import CLIPModel, CLIPTokenizer

        model = hub.from_pretrained(CLIPModel, model_id)
        tokenizer = hub.from_pretrained(CLIPTokenizer, processor_id)
        self._setup(model, tokenizer, dtype)

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return at_least_f32(self.model.logit_scale.exp()) * self.cosine(images, prompts)


@register("clipscore")
class CLIPScore(_CLIPScorer):
    """CLIPScore = ``100 * max(cos(image, text), 0)`` with OpenAI CLIP ViT-L/14.

    Why this definition: it is the scale RLHF / text-to-image papers report (values ~20-35); Hessel et al.'s CLIP-S is
    ``2.5 * max(cos, 0)`` (with ViT-B/32 and the prefix "A photo depicts"), i.e. ours times 0.025. The prompt is used
    as is. The clamp at 0 has zero gradient for images whose cosine is negative.
    """

    definition = (
        "clipscore: openai/clip-vit-large-patch14 CLIPModel; resize shortest side 224 bicubic+antialias clipped to "
        "[0,1], center crop 224, CLIP mean/std; its tokenizer truncated to 77 tokens, prompt as is; "
        "score = 100 * max(cos(image, text), 0)"
    )
    HUB_ASSETS = ((CLIP_L14, None),)

    def __init__(self, model_id: str = CLIP_L14, dtype=None):
        super().__init__()
        from transformers import CLIPModel, CLIPTokenizer

        model = hub.from_pretrained(CLIPModel, model_id)
        tokenizer = hub.from_pretrained(CLIPTokenizer, model_id)
        self._setup(model, tokenizer, dtype)

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return 100.0 * self.cosine(images, prompts).clamp(min=0.0)


@register("hpsv2")
class HPSv2(_CLIPScorer):
    """HPS v2.1: the raw cosine between the image and text embeddings of the HPSv2.1 open_clip ViT-H-14 checkpoint,
    as ``hpsv2.score`` returns it (typical values 0.2-0.35).

    The open_clip state dict is renamed into a transformers ``CLIPModel`` (:mod:`._hub_openclip`), because open_clip
    needs torchvision. Args: ``model_id`` (hub repo, local folder holding ``filename``, or the .pt file itself),
    ``filename``, ``tokenizer_id`` (the OpenAI CLIP BPE, as open_clip's ViT-H-14 tokenizer), head counts (ViT-H-14:
    16 and 16), ``dtype``, ``weights_only`` (torch.load safety; set False only for a trusted file that needs it).
    Preprocessing is the reference's: ``hpsv2.score`` builds its model with ``light_augmentation=True``, whose eval
    transform is open_clip's ``image_transform(resize_longest_max=True)``: ToTensor, then ``ResizeMaxSize`` on the
    float tensor (longest side to 224 with torch's antialiased bicubic, the torchvision >= 0.17 default, not clipped;
    zero padding to 224 x 224, ``pad // 2`` on top / left), no crop (:func:`._hub_common.letterbox_preprocess`).
    """

    definition = (
        "hpsv2: HPS v2.1 (xswu/HPSv2 HPS_v2.1_compressed.pt, open_clip ViT-H-14 mapped to CLIPModel); resize longest "
        "side to 224 (other side rounded) bicubic+antialias (not clipped), pad with zeros to 224x224 (pad//2 on "
        "top/left), no crop, CLIP mean/std; CLIP BPE tokenizer of laion/CLIP-ViT-H-14-laion2B-s32B-b79K truncated to "
        "77 tokens; score = cos(image, text) (raw, ~0.2-0.35)"
    )
    HUB_ASSETS = (("xswu/HPSv2", "HPS_v2.1_compressed.pt"), (LAION_H14, None))

    def __init__(
        self,
        model_id: str = "xswu/HPSv2",
        filename: str = "HPS_v2.1_compressed.pt",
        tokenizer_id: str = LAION_H14,
        vision_num_heads: int = 16,
        text_num_heads: int = 16,
        dtype=None,
        weights_only: bool = True,
    ):
        super().__init__()
        from transformers import CLIPModel, CLIPTokenizer

        from ._hub_openclip import clip_config_from_openclip, openclip_to_clip_state_dict

        path = hub.hf_file(model_id, filename)
        tokenizer = hub.from_pretrained(CLIPTokenizer, tokenizer_id)
        raw = load_checkpoint(path, weights_only=weights_only)
        config = clip_config_from_openclip(
            raw,
            vision_num_heads=vision_num_heads,
            text_num_heads=text_num_heads,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        mapped = openclip_to_clip_state_dict(raw)
        model = build_with_weights(lambda: CLIPModel(config), mapped, f"HPSv2 ({path})")
        self._setup(model, tokenizer, dtype)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return letterbox_preprocess(at_least_f32(images), self.image_size).to(self.dtype)

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.cosine(images, prompts)


@register("aesthetic")
class AestheticScore(FrozenScorer):
    """LAION improved aesthetic predictor (v2, "sac+logos+ava1-l14-linearMSE"): an affine MLP on the L2-normalised
    OpenAI CLIP ViT-L/14 image embedding (the projected 768-d one, as ``clip.encode_image`` returns). Prompts are
    ignored (may be None). Args: ``model_id`` (hub repo, local folder, or the .pth itself), ``filename``,
    ``clip_model_id``, ``dtype`` (of the CLIP; the MLP head stays float32 and runs in it), ``weights_only``.
    """

    keep_float32 = ("head",)

    definition = (
        "aesthetic: LAION improved-aesthetic-predictor (camenduru/improved-aesthetic-predictor "
        "sac+logos+ava1-l14-linearMSE.pth, MLP 768-1024-128-64-16-1) on the L2-normalised "
        "openai/clip-vit-large-patch14 image embedding; resize shortest side 224 bicubic+antialias clipped to [0,1], "
        "center crop 224, CLIP mean/std; prompts ignored; AVA 1-10 scale"
    )
    HUB_ASSETS = (("camenduru/improved-aesthetic-predictor", "sac+logos+ava1-l14-linearMSE.pth"), (CLIP_L14, None))

    def __init__(
        self,
        model_id: str = "camenduru/improved-aesthetic-predictor",
        filename: str = "sac+logos+ava1-l14-linearMSE.pth",
        clip_model_id: str = CLIP_L14,
        dtype=None,
        weights_only: bool = True,
    ):
        super().__init__()
        from transformers import CLIPModel

        path = hub.hf_file(model_id, filename)
        head_sd = load_checkpoint(path, weights_only=weights_only)
        widths = MLPHead.widths_from(head_sd)
        self.head = build_with_weights(lambda: MLPHead(widths), head_sd, f"aesthetic head ({path})")
        # the whole CLIPModel (its text tower is unused): CLIPVisionModelWithProjection would read the projection
        # width from vision_config, which CLIPModel checkpoints need not set consistently
        self.clip = hub.from_pretrained(CLIPModel, clip_model_id)
        if self.clip.visual_projection.out_features != widths[0]:
            raise ValueError(
                f"the aesthetic head takes {widths[0]}-d embeddings but {clip_model_id} gives "
                f"{self.clip.visual_projection.out_features}-d ones: pair the head with the CLIP it was trained on"
            )
        self.image_size = int(self.clip.config.vision_config.image_size)
        self.cast(dtype)
        self.freeze()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return clip_preprocess(at_least_f32(images), self.image_size).to(self.dtype)

    def forward(self, images: torch.Tensor, prompts: list[str] | None = None) -> torch.Tensor:
        check_inputs(images, prompts, need_prompts=False)
        emb = at_least_f32(features(self.clip.get_image_features(pixel_values=self.preprocess(images))))
        emb = emb / emb.norm(dim=-1, keepdim=True)
        return at_least_f32(self.head(emb).squeeze(-1))


@register("blipscore")
class BLIPScore(FrozenScorer):
    """BLIPScore as ImageReward defines it: the ITC cosine between BLIP's projected, normalised image [CLS] and text
    [CLS] (unimodal text encoder), prompts truncated to 35 tokens. The checkpoint choice: docs/method.md,
    section 'Rewards and metrics'.
    Args: ``model_id`` (hub id or local folder of a BlipForImageTextRetrieval with its tokenizer), ``dtype``.
    """

    max_tokens = BLIP_MAX_TOKENS

    definition = (
        "blipscore: Salesforce/blip-itm-large-coco BlipForImageTextRetrieval, ITC; resize to 384x384 bicubic+antialias "
        "clipped to [0,1] (no crop), CLIP mean/std; its BERT tokenizer truncated to 35 tokens; "
        "score = cos(vision_proj(image CLS), text_proj(text CLS)) in [-1, 1]"
    )
    HUB_ASSETS = (("Salesforce/blip-itm-large-coco", None),)

    def __init__(self, model_id: str = "Salesforce/blip-itm-large-coco", dtype=None):
        super().__init__()
        from transformers import AutoTokenizer, BlipForImageTextRetrieval

        self.model = hub.from_pretrained(BlipForImageTextRetrieval, model_id)
        self.cast(dtype)
        self.tokenizer = hub.from_pretrained(AutoTokenizer, model_id)
        self.image_size = int(self.model.config.vision_config.image_size)
        self.freeze()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return blip_preprocess(at_least_f32(images), self.image_size).to(self.dtype)

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        check_inputs(images, prompts)
        m = self.model
        image_embeds = m.vision_model(pixel_values=self.preprocess(images)).last_hidden_state
        ids, mask = self.tokenize(prompts)
        text_embeds = m.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        img = torch.nn.functional.normalize(at_least_f32(m.vision_proj(image_embeds[:, 0, :])), dim=-1)
        txt = torch.nn.functional.normalize(at_least_f32(m.text_proj(text_embeds[:, 0, :])), dim=-1)
        return (img * txt).sum(dim=-1)


@register("imagereward")
class ImageReward(FrozenScorer):
    """ImageReward v1.0: ``(r - mean) / std`` with r the MLP head on the first-token output of BLIP's BERT text encoder
    cross-attending to the BLIP ViT-L/16 image tokens; mean and std are the reference's constants.

    The checkpoint (BLIP-repo key layout) is mapped into transformers' BlipVisionModel/BlipTextModel
    (:mod:`._hub_blip`). Args: ``model_id`` (hub repo, local folder, or the .pt itself), ``filename``,
    ``tokenizer_id`` (bert-base-uncased; BLIP's [DEC] and [ENC] tokens are added as BLIP's ``init_tokenizer`` does),
    head counts (ViT-L 16, BERT-base 12), ``dtype`` (of BLIP; the MLP head stays float32 and runs in it),
    ``weights_only``.
    """

    max_tokens = BLIP_MAX_TOKENS
    keep_float32 = ("net.head",)

    definition = (
        "imagereward: ImageReward-v1.0 (THUDM/ImageReward ImageReward.pt: BLIP ViT-L/16 224 + BERT cross-attention + "
        "MLP 768-1024-128-64-16-1 on the [CLS] output); resize shortest side 224 bicubic+antialias clipped to [0,1], "
        "center crop 224, CLIP mean/std; bert-base-uncased (+[DEC],[ENC]) truncated to 35 tokens, first token [CLS]; "
        "score = (r - 0.16717362830052426) / 1.0333394966054072"
    )
    HUB_ASSETS = (("THUDM/ImageReward", "ImageReward.pt"), ("google-bert/bert-base-uncased", None))

    def __init__(
        self,
        model_id: str = "THUDM/ImageReward",
        filename: str = "ImageReward.pt",
        tokenizer_id: str = "google-bert/bert-base-uncased",
        vision_num_heads: int = 16,
        text_num_heads: int = 12,
        dtype=None,
        weights_only: bool = True,
    ):
        super().__init__()
        from transformers import BertTokenizer

        from ._hub_blip import ImageRewardNet, imagereward_configs, imagereward_to_blip_state_dict

        path = hub.hf_file(model_id, filename)
        tokenizer = hub.from_pretrained(BertTokenizer, tokenizer_id)
        # BLIP's init_tokenizer: bos [DEC] and one extra special token [ENC] (ids 30522, 30523 for bert-base-uncased)
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
        tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        self.tokenizer = tokenizer
        mapped = imagereward_to_blip_state_dict(load_checkpoint(path, weights_only=weights_only))
        vision, text, widths = imagereward_configs(
            mapped, vision_num_heads=vision_num_heads, text_num_heads=text_num_heads
        )
        if len(tokenizer) > text.vocab_size:
            raise ValueError(
                f"tokenizer '{tokenizer_id}' has {len(tokenizer)} tokens but the text encoder only {text.vocab_size}"
            )
        self.net = build_with_weights(lambda: ImageRewardNet(vision, text, widths), mapped, f"ImageReward ({path})")
        self.cast(dtype)
        self.image_size = int(vision.image_size)
        self.freeze()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return clip_preprocess(at_least_f32(images), self.image_size).to(self.dtype)

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        check_inputs(images, prompts)
        ids, mask = self.tokenize(prompts)
        r = at_least_f32(self.net(self.preprocess(images), ids, mask))
        return (r - IMAGEREWARD_MEAN) / IMAGEREWARD_STD
