"""Zero-shot CLIP: frozen CLIP image embeddings for sketches and photos, no training.

The reference row of every CLIP-based ZS-SBIR method (DRCPL, and the CLIP baselines of
Sain et al., CVPR 2023, "CLIP for All Things Zero-Shot Sketch-Based Image Retrieval"): the same
image encoder for both domains, the projected embedding L2-normalised, cosine similarity. Images
are normalised with the CLIP folder's processor statistics and resized to CLIP's input size.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from zsbench.clip import DEFAULT_CLIP, TINY_CLIP_NOTE, encode_image, fit_image_size, load_clip
from zsbench.methods.base import MethodMetadata, RetrievalMethod


class ClipZeroshot(RetrievalMethod):
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
            "Images are resized to CLIP's input size by the dataset transform and, when the "
            "dataset renders another size, bilinearly in the method (no centre crop).",
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

    def train(self, mode: bool = True):
        """CLIP is frozen: it stays in eval mode whatever is asked."""
        super().train(mode)
        self.clip.eval()
        return self

    def encode_query(self, batch: dict) -> Tensor:
        images = fit_image_size(batch["image"], self.image_size)
        return F.normalize(encode_image(self.clip, images).float(), dim=-1)

    encode_gallery = encode_query
