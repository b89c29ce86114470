"""zsbench's own CLIP forward passes at the real sizes of the OpenAI checkpoints.

No real CLIP weights are reachable offline, but the architectures are public: randomly
initialised `CLIPModel`s with the exact configs of ViT-B/32, ViT-B/16 and ViT-L/14 (the values
of openai/clip-vit-*'s config.json) must give, through zsbench.clip (the encoders DRCPL
prompts and the pseudo-token path of Pic2Word / SEARLE / LinCIR), the embeddings of
transformers' own `get_image_features` / `get_text_features`, and a `save_pretrained` folder
of each must load through `model.clip=<folder>`. These are the tests that pin the transformers
lower bound in pyproject.toml (the oldest release that passes them).
"""

from __future__ import annotations

import json

import pytest
import torch

from zsbench.clip import (
    encode_image,
    encode_text,
    encode_with_pseudo_tokens,
    load_clip,
    tokenize,
)

pytestmark = pytest.mark.slow

VOCAB = 49408  # OpenAI's BPE vocabulary; <|startoftext|> 49406, <|endoftext|> 49407
# (text width, text heads, vision width, vision layers, vision heads, patch, projection)
REAL = {
    "ViT-B/32": (512, 8, 768, 12, 12, 32, 512),
    "ViT-B/16": (512, 8, 768, 12, 12, 16, 512),
    "ViT-L/14": (768, 12, 1024, 24, 16, 14, 768),
}


def real_config(name: str):
    from transformers import CLIPConfig

    t_width, t_heads, v_width, v_layers, v_heads, patch, proj = REAL[name]
    return CLIPConfig(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=t_width,
            intermediate_size=4 * t_width,
            num_hidden_layers=12,
            num_attention_heads=t_heads,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            bos_token_id=VOCAB - 2,
            eos_token_id=VOCAB - 1,
            pad_token_id=VOCAB - 1,
        ),
        vision_config=dict(
            hidden_size=v_width,
            intermediate_size=4 * v_width,
            num_hidden_layers=v_layers,
            num_attention_heads=v_heads,
            image_size=224,
            patch_size=patch,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        ),
        projection_dim=proj,
    )


def write_tokenizer(folder) -> None:
    """A CLIPTokenizer over OpenAI's vocabulary size: single characters (no merges) first,
    filler entries up to 49406, then the start and end tokens at their real ids."""
    from transformers import CLIPImageProcessor

    from zsbench.clip import _byte_alphabet

    chars = _byte_alphabet()
    vocab: dict[str, int] = {}
    for tok in [*chars, *(c + "</w>" for c in chars)]:
        vocab.setdefault(tok, len(vocab))
    while len(vocab) < VOCAB - 2:
        vocab[f"<filler{len(vocab)}>"] = len(vocab)
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = VOCAB - 2, VOCAB - 1
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    from transformers import CLIPTokenizer

    CLIPTokenizer.from_pretrained(str(folder)).save_pretrained(str(folder))
    CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    ).save_pretrained(str(folder))


@pytest.fixture(scope="module", params=list(REAL))
def real_clip(request, tmp_path_factory):
    """(name, the random CLIPModel of that architecture, its save_pretrained folder)."""
    from transformers import CLIPModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(real_config(request.param)).eval()
    folder = tmp_path_factory.mktemp("clip") / request.param.replace("/", "-")
    folder.mkdir()
    model.save_pretrained(str(folder))
    write_tokenizer(folder)
    yield request.param, model, folder


def _pooled(out):
    return out.pooler_output if hasattr(out, "pooler_output") else out  # transformers 5 vs 4


def test_image_embeddings_equal_transformers(real_clip):
    name, model, _ = real_clip
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = encode_image(model, x)
        theirs = _pooled(model.get_image_features(pixel_values=x))
    assert ours.shape == (2, REAL[name][-1])
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_text_embeddings_equal_transformers(real_clip):
    name, model, folder = real_clip
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(folder))
    texts = ["a photo of a cat.", "a sketch of a hot air balloon over the sea."]
    ids, eos = tokenize(tok, texts)
    assert int(eos[0]) < int(eos[1])  # the shorter text is padded after its end token
    mask = torch.tensor(tok(texts, padding=True)["attention_mask"])
    with torch.no_grad():
        ours = encode_text(model, model.text_model.embeddings.token_embedding(ids), eos)
        theirs = _pooled(model.get_text_features(input_ids=ids, attention_mask=mask))
        # the pseudo-token path, each placeholder given the embedding of the word it stands
        # for, is the plain text: "a photo of $ cat." with $ = "z" is "a photo of z cat."
        z = tok("z")["input_ids"][1]
        word = model.text_model.embeddings.token_embedding(torch.tensor([z, z]))
        prompts = ["a photo of $ cat.", "a sketch of $ balloon over the sea."]
        pseudo = encode_with_pseudo_tokens(model, tok, prompts, word, "$")
        plain_ids, plain_eos = tokenize(tok, [p.replace("$", "z") for p in prompts])
        plain = encode_text(
            model, model.text_model.embeddings.token_embedding(plain_ids), plain_eos
        )
    assert ours.shape == (2, REAL[name][-1])
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pseudo, plain, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(pseudo[0], ours[0], atol=1e-3)  # a different text differs


def test_save_pretrained_folder_loads_as_model_clip(real_clip):
    name, model, folder = real_clip
    loaded = load_clip(str(folder))
    assert loaded.info.feature_dim == REAL[name][-1]
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(encode_image(loaded.model, x), encode_image(model, x))
    assert loaded.info.weights_sha256 and str(folder) in str(loaded.info.weights)
