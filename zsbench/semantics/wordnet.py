"""``wordnet``: SEM-PCYC's hierarchy embedding, from a local WordNet 3.0 database.

Each class's WordNet noun synset is embedded as its path similarity to every node of the union
of the classes' hypernym closures (nodes sorted by synset name). The database is Debian's
wordnet-base + wordnet-sense-index (/usr/share/wordnet) or $WORDNET_DIR; `ensure_wordnet` copies
it into an nltk_data folder (nltk refuses other roots) and writes the `lexnames` file Debian
lacks.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from zsbench.errors import ZsbenchError
from zsbench.semantics.common import cache_root, class_words, file_stat

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
    dest = Path(dest).expanduser() if dest is not None else cache_root() / "nltk_data"
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
    words = class_words(name)
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


def wordnet_embedding(class_names: Sequence[str], path: str | None) -> np.ndarray:
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


def wordnet_identity(path: str | None):
    try:
        import nltk
    except ImportError as e:
        raise ZsbenchError("The 'wordnet' semantic source needs nltk: pip install nltk") from e
    nltk_data = _nltk_data_for(path)

    return [file_stat(nltk_data / "corpora" / "wordnet" / "data.noun"), nltk.__version__]
