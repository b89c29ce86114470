"""Does the backbone's pretraining already know the 'unseen' classes?

A backbone pretrained on ImageNet-1k has seen photos of any unseen class that is also an
ImageNet-1k class, which inflates zero-shot numbers. Two checks, both recorded in the result:

- by WordNet id: Sketchy and TU-Berlin-Ext photos are ImageNet photos named `n<8 digits>_...`;
  an unseen class whose photos carry an ImageNet-1k synset id overlaps for certain;
- by name: an unseen class name equal to one of the lemmas of an ImageNet-1k class (approximate:
  'mouse' the animal matches 'mouse, computer mouse').
`leak` is the WordNet-id verdict when the photos carry ids, else the name verdict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

WNID = re.compile(r"^(n\d{8})_")


@lru_cache(maxsize=1)
def _imagenet1k() -> tuple[frozenset[str], dict[str, str]]:
    """ImageNet-1k synset ids and a lemma -> description map (from timm's bundled class info)."""
    from timm.data import ImageNetInfo

    from zsbench.splits import class_key

    info = ImageNetInfo()
    lemmas: dict[str, str] = {}
    for i in range(info.num_classes()):
        desc = info.index_to_description(i)
        for lemma in desc.split(","):
            lemmas.setdefault(class_key(lemma), desc)
    return frozenset(info.label_names()), lemmas


def photo_wnids(paths: Iterable[str]) -> set[str]:
    return {m.group(1) for p in paths if (m := WNID.match(Path(p).name))}


def imagenet_overlap(unseen: dict[str, set[str]], pretrained_on: str | None) -> dict | None:
    """`unseen`: class name -> WordNet ids of its photos (empty set when unknown).
    `pretrained_on` "unknown" (a user's weights file) is checked as if ImageNet-1k: the
    overlap is what a reader must know about, and the record says it is a guess."""
    if pretrained_on not in ("imagenet-1k", "unknown"):
        return None
    from zsbench.splits import class_key

    wnids, lemmas = _imagenet1k()
    by_name = {c: lemmas[class_key(c)] for c in unseen if class_key(c) in lemmas}
    by_wnid = {c: sorted(ids & wnids) for c, ids in unseen.items() if ids & wnids}
    have_ids = any(unseen.values())
    return {
        "pretrained_on": pretrained_on,
        "checked_by": "wordnet_id" if have_ids else "name",
        "leak": bool(by_wnid) if have_ids else bool(by_name),
        "unseen_classes_in_pretraining_by_wordnet_id": by_wnid,
        "unseen_classes_matching_pretraining_names": by_name,
    }
