"""Zero-shot CLIP: frozen CLIP image embeddings for sketches and photos, no training.

The reference row of every CLIP-based ZS-SBIR method (DRCPL, and the CLIP baselines of
Sain et al., CVPR 2023, "CLIP for All Things Zero-Shot Sketch-Based Image Retrieval"): the same
image encoder for both domains, the projected embedding L2-normalised, cosine similarity. Images
are normalised with the CLIP folder's processor statistics and resized to CLIP's input size.

Deviations from the official CLIP: `ClipZeroshot.metadata.deviations` (rendered on
docs/methods/clip-zeroshot.md).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from zsbench.clip import DEFAULT_CLIP, TINY_CLIP_NOTE, encode_image, fit_image_size, load_clip
from zsbench.methods.base import MethodMetadata, SBIRMethod


class ClipZeroshot(SBIRMethod):
    """CLIP's image encoder, frozen, for queries and gallery alike."""

    metadata = MethodMetadata(
        title="Zero-shot CLIP",
        task="sbir",
        inputs="images",
        trains=False,
        paper=(
            "Radford et al.: Learning Transferable Visual Models From Natural Language "
            "Supervision, ICML 2021 (CLIP), used as a zero-shot SBIR baseline"
        ),
        year=2021,
        code="openai/CLIP",
        backbone="CLIP ViT-B/16 image encoder (OpenAI weights), frozen",
        side_information=None,
        deviations=(
            "**Preprocessing**: images are resized whole to CLIP's input size (the dataset "
            "transform's bilinear `Resize((size, size))`, aspect ratio not kept, then bilinear, "
            "antialiased in the method when the dataset renders another size), where OpenAI's "
            "preprocessing resizes the short side (bicubic) and centre-crops: elongated images "
            "keep their borders and change their shape. Normalisation uses the CLIP folder's "
            "mean/std (OpenAI's CLIP statistics), as official.",
            "**Implementation**: the transformers port (`CLIPModel`) of the same weights "
            "instead of OpenAI's `clip` package; `encode_image` "
            "(`visual_projection(post_layernorm(CLS))`) equals `get_image_features` (tested), so "
            "this changes nothing in effect.",
            "**Precision**: zsbench encodes in fp32 by default (`trainer.precision: 32-true`), as "
            "`clip.load` does on CPU; on CUDA `clip.load` converts the weights to fp16, whose "
            "embeddings differ from these by rounding only.",
        ),
        notes=TINY_CLIP_NOTE,
    )
    similarity = "cosine"

    def __init__(self, clip: str = DEFAULT_CLIP) -> None:
        super().__init__()
        self.save_hyperparameters()
        loaded = load_clip(clip)
        self.clip = loaded.model
        self.backbone_info = loaded.info
        self.image_size = loaded.image_size

    def frozen_modules(self) -> list[nn.Module]:
        return [self.clip]  # frozen: it stays in eval mode whatever is asked

    def encode_query(self, batch: dict) -> Tensor:
        images = fit_image_size(batch["image"], self.image_size)
        return F.normalize(encode_image(self.clip, images).float(), dim=-1)

    encode_gallery = encode_query
