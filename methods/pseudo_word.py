"""The pseudo-word query side shared by SEARLE, LinCIR and RTD (their official code copies it).

A frozen CLIP and a trained phi: CLIP image embedding -> one token embedding of the text encoder
(the pseudo-word $); a query is "a photo of $ that {modification}". Here: SEARLE's `Phi`, the
`PseudoWordMethod` base, PALAVRA's NT-Xent (SEARLE's phi loss, RTD's loss) and LinCIR's caption
cleaning and feature noise (RTD reuses both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zsbench.clip import encode_with_pseudo_tokens
from zsbench.methods.base import CIRMethod

__all__ = [
    "PLACEHOLDER",
    "Phi",
    "PseudoWordMethod",
    "clean_caption",
    "noisy_features",
    "nt_xent_loss",
]

PLACEHOLDER = "$"


class Phi(nn.Module):
    """Textual-inversion network: a CLIP embedding [B, in] -> a token embedding [B, out].

    Linear(in, hidden) GELU Dropout Linear(hidden, hidden) GELU Dropout Linear(hidden, out), with
    hidden = 4 * in in SEARLE, LinCIR and RTD.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, output_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def nt_xent_loss(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """PALAVRA's contrastive loss (official `utils.contrastive_loss`) on pairs (a_i, b_i).

    With z = normalize([a; b]) (2N rows) and s_jk = z_j . z_k / temperature, each of the 2N rows
    is a positive pair with its partner (j +- N) against every other row except itself:
    loss = -mean_j log(exp(s_j,partner) / sum_{k != j} exp(s_jk)). Negatives include rows of
    the same side (a_i vs a_k), unlike CLIP's loss. Computed in log space (the official code
    exponentiates first, which overflows in fp16 for small temperatures).
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"nt_xent_loss needs two [N, D] tensors, got {a.shape} and {b.shape}")
    z = F.normalize(torch.cat([a, b]).float(), dim=1)
    n = a.shape[0]
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), -torch.inf)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, partner)


class PseudoWordMethod(CIRMethod):
    """A frozen CLIP and a trained `self.phi`; queries put phi(reference image) into the prompt.

    Subclasses build `self.phi` and train it. `query_text_model()` is the text encoder that
    encodes queries (RTD swaps in its tuned copy); `pseudo_tokens(features)` is phi on CLIP
    embeddings (LinCIR can L2-normalise them first, as its `--l2_normalize` option)."""

    phi: nn.Module
    normalize_phi_input: bool = False

    def pseudo_tokens(self, features: Tensor) -> Tensor:
        if self.normalize_phi_input:
            features = F.normalize(features, dim=-1)
        return self.phi(features)

    def query_text_model(self) -> nn.Module:
        return self.clip

    def encode_query(self, batch: dict) -> Tensor:
        tokens = self.pseudo_tokens(self.image_features(batch["reference"]))
        prompts = self.compose(list(batch["text"]))
        text = encode_with_pseudo_tokens(self.query_text_model(), self.tokenizer, prompts, tokens)
        return F.normalize(text.float(), dim=-1)

    def make_phi(self, dropout: float) -> Phi:
        """SEARLE's phi sized for this CLIP: projection dim -> 4x -> token-embedding width."""
        dim = int(self.clip.config.projection_dim)
        return Phi(dim, 4 * dim, int(self.clip.text_model.config.hidden_size), dropout)


def clean_caption(caption: str | None) -> str:
    """Lower case, the placeholder removed, stripped (official `loader.clean_caption`), and
    runs of spaces collapsed (the tokenizer ignores them; keyword matching does not)."""
    return " ".join((caption or "").lower().replace(PLACEHOLDER, " ").split())


def noisy_features(
    features: Tensor, scale: float, generator: torch.Generator | None = None
) -> Tensor:
    """features + scale * u * n with u ~ U[0, 1) per row and n ~ N(0, I) (official train_phi):
    each caption gets Gaussian noise of a random strength between 0 and `scale`."""
    b = features.shape[0]
    u = torch.rand(b, 1, generator=generator, device=features.device, dtype=features.dtype)
    n = torch.randn(features.shape, generator=generator, device=features.device)
    return features + scale * u * n.to(features.dtype)
