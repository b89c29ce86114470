"""SEARLE: phi, the concept/phrase side, OTI, what trains, bench runs (with +rtd variants)."""

from __future__ import annotations

import json

import pytest
import torch

import zsbench.methods.rtd  # noqa: F401  (registers the +rtd variants)
from zsbench.errors import ZsbenchError
from zsbench.methods.pseudo_word import Phi
from zsbench.methods.searle import Searle, cosine_embedding_loss, load_phrases

CONCEPTS = ["circle", "square", "red", "blue", "striped"]


@pytest.fixture(scope="module")
def model() -> Searle:
    torch.manual_seed(0)
    return Searle(clip="tiny", concepts=CONCEPTS, top_k=2, oti_steps=5, lr=1e-3)


def test_phi_shape_and_dropout():
    phi = Phi(8, 32, 5, dropout=0.5)
    x = torch.randn(4, 8)
    assert phi(x).shape == (4, 5)
    phi.eval()
    assert torch.equal(phi(x), phi(x))  # no dropout in eval


def test_cosine_embedding_loss_matches_torch():
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    ref = torch.nn.CosineEmbeddingLoss()(a, b, torch.ones(6))
    assert cosine_embedding_loss(a, b).item() == pytest.approx(ref.item(), rel=1e-6)
    assert cosine_embedding_loss(a, 3 * a).item() == pytest.approx(0.0, abs=1e-6)


def test_phrases_keep_only_those_naming_the_concept(tmp_path):
    path = tmp_path / "phrases.json"
    path.write_text(json.dumps({"cat": ["a cat on a mat", "a dog"], "dog": ["nothing here"]}))
    assert load_phrases(["cat", "dog"], str(path)) == {"cat": ["a cat on a mat"]}
    assert all("red" in p for p in load_phrases(["red"], None)["red"])
    with pytest.raises(ZsbenchError, match="concept vocabulary"):
        Searle(clip="tiny")


def test_official_phrase_files_keep_their_case(tmp_path):
    """OIDv7 concepts are capitalised ("Coffee cup") and so are the GPT phrase files' keys:
    the concepts keep their case (official: stripped only), so the two match."""
    from zsbench.methods.searle import load_concepts

    path = tmp_path / "phrases.json"
    path.write_text(json.dumps({"Coffee cup": ["a Coffee cup on a desk"], "Dog": ["a Dog"]}))
    concepts = load_concepts([" Coffee cup ", "Dog", "Dog"])
    assert concepts == ["Coffee cup", "Dog"]
    assert load_phrases(concepts, str(path)) == {
        "Coffee cup": ["a Coffee cup on a desk"],
        "Dog": ["a Dog"],
    }


def test_defaults_are_the_official_train_phi_values():
    """miccunifi/SEARLE a9c314b: train_phi.py --lambda-gpt 0.75, --top-k-concepts 150;
    oti_inversion.py --top-k 15, --lambda_gpt 0.5."""
    from zsbench.config import signature_defaults

    d = signature_defaults(Searle)
    official = (0.75, 150, 15, 0.5)
    assert (d["lambda_gpt"], d["phi_top_k"], d["top_k"], d["oti_lambda_gpt"]) == official


def test_phi_regularises_with_its_own_wider_concept_pool(monkeypatch):
    """OTI draws its phrase concept from the top `top_k`, phi's GPT loss from the top
    `phi_top_k`: with phi_top_k = all concepts, phi's draws reach beyond OTI's top 2."""
    seen: list[list[list[str]]] = []
    real = Searle.gpt_loss

    def spy(self, tokens, concepts):
        seen.append(concepts)
        return real(self, tokens, concepts)

    monkeypatch.setattr(Searle, "gpt_loss", spy)
    torch.manual_seed(0)
    model = Searle(clip="tiny", concepts=CONCEPTS, top_k=2, phi_top_k=len(CONCEPTS), oti_steps=1)
    batch = {"image": torch.randn(3, 3, 64, 64), "index": torch.tensor([1, 2, 3])}
    model.training_step(batch, 0)
    oti_pool, phi_pool = seen[0], seen[-1]
    assert all(len(c) == 2 for c in oti_pool)
    assert all(len(c) == len(CONCEPTS) for c in phi_pool)
    assert [c[:2] for c in phi_pool] == oti_pool  # one ranking, two depths


def test_oti_lowers_its_loss_and_is_cached(model):
    feats = model.image_features(torch.randn(3, 3, 64, 64)).float()
    concepts = model.top_concepts(feats, model.hparams.top_k)
    assert all(len(c) == 2 and set(c) <= set(CONCEPTS) for c in concepts)
    torch.manual_seed(1)
    random_tok = torch.randn(3, model.clip.text_model.config.hidden_size) * 0.02
    from zsbench.clip import encode_with_pseudo_tokens

    def cos_loss(tok):
        text = encode_with_pseudo_tokens(model.clip, model.tokenizer, [" $ "] * 3, tok)
        return cosine_embedding_loss(text, feats).item()

    model.hparams.oti_steps = 30
    tokens = model.oti_targets(feats, torch.tensor([7, 8, 9]), concepts)
    assert set(model.oti_tokens) == {7, 8, 9}
    assert cos_loss(tokens) < cos_loss(random_tok)
    again = model.oti_targets(feats, torch.tensor([9, 7]), concepts)  # cached: no new OTI
    assert torch.equal(again, tokens[[2, 0]])


def test_one_step_trains_phi_only(model):
    model.train()
    before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    phi_before = [p.clone() for p in model.phi.parameters()]
    opt = model.configure_optimizers()
    batch = {"image": torch.randn(4, 3, 64, 64), "index": torch.arange(4)}
    model.log = lambda *a, **k: None  # no trainer attached
    loss = model.training_step(batch, 0)
    loss.backward()
    assert all(p.grad is None for p in model.clip.parameters())
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(phi_before, model.phi.parameters()))
    assert all(torch.equal(v, model.clip.state_dict()[k]) for k, v in before.items())
