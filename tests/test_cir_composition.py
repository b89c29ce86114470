"""The composition path of every pseudo-word CIR method, against an output computed by hand.

When phi maps the reference image to the token embedding of a real word w, a query must be the
plain CLIP text embedding of the prompt with w written in place of `$`:
"a photo of w that <modification>" (SEARLE's and LinCIR's prompt; Pic2Word has its own test in
test_pic2word.py). With +RTD the prompt goes through the tuned text encoder, not the frozen one.
Any mistake in where the pseudo token lands, which prompt is used, which text encoder encodes
it, or the normalisation makes the two differ.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zsbench.clip import encode_prompts
from zsbench.methods.lincir import Lincir
from zsbench.methods.rtd import LincirRtd, SearleRtd
from zsbench.methods.searle import Searle


def _searle():
    return Searle(clip="tiny", concepts=["circle", "red"], top_k=1, oti_steps=1)


def _rtd(cls):
    def make():
        kw = {"concepts": ["circle", "red"], "top_k": 1} if cls is SearleRtd else {}
        m = cls(clip="tiny", base_args=kw)
        m.phi_ready = True
        with torch.no_grad():  # a tuned encoder (same word embeddings) unlike the frozen one
            for n, p in m.query_text.named_parameters():
                if "embeddings" not in n:
                    p.add_(0.05 * torch.randn_like(p))
        return m

    return make


MAKERS = {
    "searle": _searle,
    "lincir": lambda: Lincir(clip="tiny"),
    "lincir+rtd": _rtd(LincirRtd),
    "searle+rtd": _rtd(SearleRtd),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_query_is_the_prompt_with_the_word_phi_returns(name, monkeypatch):
    torch.manual_seed(0)
    model = MAKERS[name]().eval()
    word = "x"
    word_id = model.tokenizer(word)["input_ids"][1]
    emb = model.clip.text_model.embeddings.token_embedding.weight[word_id].detach()
    monkeypatch.setattr(model, "pseudo_tokens", lambda feats: emb.expand(len(feats), -1))
    batch = {
        "reference": torch.randn(2, 3, 64, 64),
        "text": ["is red", "has stripes"],
        "index": torch.arange(2),
    }
    with torch.no_grad():
        query = model.encode_query(batch)
    encoder = model.query_text if name.endswith("+rtd") else model.clip
    prompts = ["a photo of x that is red", "a photo of x that has stripes"]
    with torch.no_grad():
        expected = F.normalize(encode_prompts(encoder, model.tokenizer, prompts).float(), dim=-1)
    assert torch.allclose(query, expected, atol=1e-5)
    if name.endswith("+rtd"):  # and not what the frozen encoder gives
        with torch.no_grad():
            frozen = encode_prompts(model.clip, model.tokenizer, prompts).float()
        assert not torch.allclose(query, F.normalize(frozen, dim=-1), atol=1e-3)
