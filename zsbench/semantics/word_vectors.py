"""``word2vec`` / ``glove`` / ``fasttext``: class-name vectors from a word-vector file a user gives.

Formats: text (`.txt`, `.vec`, optionally `.gz`; with or without the "N D" header), word2vec C
binary (`.bin`), `.npy` plus a vocabulary file, or gensim KeyedVectors (`.kv`) / fastText `.bin`
(these two need gensim). Multi-word names use the phrase token when the file has one
("hot_air_balloon"), else the mean of the word vectors. Only the wanted rows are read.
"""

from __future__ import annotations

import gzip
import json
import mmap
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from zsbench.errors import ZsbenchError
from zsbench.semantics.common import class_words, file_stat

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
    words = class_words(name)
    if len(words) < 2:
        return []
    raw = re.sub(r"[()\[\]]", "", str(name)).strip().replace(" ", "_")
    forms = [raw, "_".join(words), "-".join(words)]
    return list(dict.fromkeys(v for f in forms for v in _case_variants(f)))


def word_vectors(class_names: Sequence[str], path: str | None, source: str) -> np.ndarray:
    file = _vector_file(path, source)
    wanted: set[str] = set()
    for name in class_names:
        wanted.update(_phrase_candidates(name))
        for w in class_words(name):
            wanted.update(_case_variants(w))
    lookup = _lookup_table(file, source, wanted)
    rows, missing, partial = [], {}, {}
    for name in class_names:
        vec = next(
            (v for c in _phrase_candidates(name) if (v := lookup(c, False)) is not None), None
        )
        if vec is None:
            vecs, absent = [], []
            for w in class_words(name):
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


def vectors_identity(path: str | None, source: str):
    file = _vector_file(path, source)
    ident = [file_stat(file)]
    if file.suffix.lower() == ".npy":
        ident.append(file_stat(_npy_vocab(file)))
    return ident
