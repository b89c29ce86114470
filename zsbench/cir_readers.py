"""Readers of the real ZS-CIR annotation formats: FashionIQ, CIRR (rc2) and CIRCO.

Each reader returns a :class:`CIRSplit`: plain :class:`CIRQuery` records (reference name,
caption(s), target name(s), CIRR's ``img_set``, CIRCO's ground truths) and the gallery's image
names, exactly as the official loaders (SEARLE ``src/datasets.py``) build them. Annotations are
read eagerly; images are only touched by :meth:`CIRSplit.image_path` and
:meth:`CIRSplit.load_image`, so the metric code can be tested with features keyed by image
name and no images at all.

Expected layouts (``root`` is the dataset folder; ``image_root`` defaults to it):

* FashionIQ: ``captions/cap.<category>.<split>.json``,
  ``image_splits/split.<category>.<split>.json``, ``images/<name>.png`` (or ``.jpg``).
  https://github.com/XiaoxiaoGuo/fashion-iq
* CIRR: ``cirr/captions/cap.rc2.<split>.json``, ``cirr/image_splits/split.rc2.<split>.json``
  (``root`` may also be the ``cirr/`` folder itself) and the images at the split file's relative
  paths under the image root, e.g. ``dev/dev-244-0-img0.png``.
  https://github.com/Cuberick-Orion/CIRR
* CIRCO: ``annotations/<split>.json`` and ``COCO2017_unlabeled/unlabeled2017/<12-digit id>.jpg``
  with ``COCO2017_unlabeled/annotations/image_info_unlabeled2017.json`` listing the gallery (all
  COCO 2017 unlabeled images). https://github.com/miccunifi/CIRCO
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from zsbench.errors import ZsbenchError
from zsbench.metrics.cir import CIRLabels

__all__ = [
    "FASHIONIQ_CATEGORIES",
    "CIRQuery",
    "CIRSplit",
    "fashioniq_caption_pair",
    "read_circo",
    "read_cirr",
    "read_fashioniq",
]

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
CIRR_SPLITS = {"val": "val", "test": "test1", "test1": "test1", "train": "train"}
_CIRR_IMAGE_DIR = {"val": "dev", "test1": "test1", "train": "train/<0-99>"}
CIRCO_SPLITS = ("val", "test")
_PROTOCOL = {"fashioniq": "fashioniq", "cirr": "cirr", "circo": "circo", "synthetic-cir": "circo"}


@dataclass(frozen=True)
class CIRQuery:
    """One composed query. ``targets`` is empty on test splits (their labels are hidden).

    ``targets[0]`` is the main target (FashionIQ/CIRR: the only one; CIRCO: ``target_img_id``);
    the rest are further ground truths. ``img_set`` is CIRR's image set (reference included).
    """

    query_id: str
    reference: str
    captions: tuple[str, ...]
    targets: tuple[str, ...] = ()
    img_set: tuple[str, ...] = ()
    category: str = ""
    shared_concept: str = ""

    @property
    def caption(self) -> str:
        """The single modification text (CIRR, CIRCO); FashionIQ has two, see captions."""
        return self.captions[0]

    @property
    def target(self) -> str | None:
        return self.targets[0] if self.targets else None


@dataclass
class CIRSplit:
    """A dataset split: its queries, its gallery image names, and where the images are."""

    dataset: str
    split: str
    queries: list[CIRQuery]
    gallery: list[str]
    image_root: Path
    image_paths: dict[str, str] = field(default_factory=dict, repr=False)
    category: str = ""
    gallery_source: str = ""
    layout: str = ""

    @property
    def has_targets(self) -> bool:
        return all(q.targets for q in self.queries)

    def image_path(self, name: str) -> Path:
        """Path of image ``name``; no check that it exists (see :meth:`load_image`)."""
        rel = self.image_paths.get(name)
        if rel is None:
            raise ZsbenchError(f"{self.dataset} {self.split}: no image named {name!r}.")
        return self.image_root / rel

    def load_image(self, name: str) -> Image.Image:
        """Open image ``name`` as RGB; a missing file names the expected layout."""
        path = self.image_path(name)
        if self.dataset == "fashioniq" and not path.is_file():
            alt = path.with_suffix(".jpg")  # SEARLE's copy of FashionIQ uses .jpg
            path = alt if alt.is_file() else path
        if not path.is_file():
            raise ZsbenchError(
                f"{self.dataset} image {name!r} not found at {path}. Expected layout under the "
                f"image root {self.image_root}: {self.layout}. Pass image_root=<folder> if the "
                "images live elsewhere."
            )
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except OSError as e:
            raise ZsbenchError(f"cannot read image {path}: {e}") from e

    def labels(self, gallery: Sequence[str] | None = None) -> CIRLabels:
        """Gallery indices of targets, references, img_set members and ground truths.

        ``gallery`` defaults to :attr:`gallery` (the order of the score matrix's columns).
        A target or ground truth missing from the gallery is an error; a reference or img_set
        member missing from it becomes -1 (it then cannot be retrieved anyway).
        """
        if not self.has_targets:
            raise ZsbenchError(
                f"{self.dataset} {self.split} has no public targets; score it through the "
                "official server (zsbench.cir_submission writes the submission file)."
            )
        names = list(self.gallery if gallery is None else gallery)
        index = {n: i for i, n in enumerate(names)}
        if len(index) != len(names):
            raise ZsbenchError("the gallery lists an image name twice.")

        def need(name: str, q: CIRQuery) -> int:
            if name not in index:
                raise ZsbenchError(
                    f"{self.dataset} {self.split} query {q.query_id}: target {name!r} is not in "
                    f"the gallery ({len(names)} images, {self.gallery_source or 'given'})."
                )
            return index[name]

        def pad(rows: list[list[int]]) -> torch.Tensor:
            width = max(1, max(len(r) for r in rows))
            return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.int64)

        qs = self.queries
        target = torch.tensor([need(q.targets[0], q) for q in qs], dtype=torch.int64)
        reference = torch.tensor([index.get(q.reference, -1) for q in qs], dtype=torch.int64)
        protocol = _PROTOCOL[self.dataset]
        members = gt = None
        if protocol == "cirr":
            members = pad([[index.get(m, -1) for m in q.img_set] for q in qs])
        if protocol == "circo":
            gt = pad([[need(t, q) for t in q.targets] for q in qs])
        return CIRLabels(protocol, target, reference, members=members, gt=gt)


# --------------------------------------------------------------------------- helpers


def _load_json(path: Path, what: str, layout: str):
    if not path.is_file():
        raise ZsbenchError(
            f"{what} not found: {path}. Expected layout: {layout}. "
            "Download the annotations from the dataset's official repository (see docs/cir.md)."
        )
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ZsbenchError(f"{path} is not valid JSON ({e}); re-download it.") from e


def _require(entry: dict, keys: Sequence[str], path: Path, i: int) -> None:
    missing = [k for k in keys if k not in entry]
    if missing:
        raise ZsbenchError(f"{path}: entry {i} lacks {missing} (has {sorted(entry)}).")


def fashioniq_caption_pair(captions: Sequence[str]) -> tuple[str, str]:
    """FashionIQ's two relative captions joined in both orders, as SEARLE / LinCIR build them.

    Each caption is stripped of surrounding ``.?,`` and spaces; returns
    ``("c1 and c2", "c2 and c1")``. The method prefixes "a photo of $ that " and averages the
    two query embeddings (:func:`zsbench.metrics.cir.combine_caption_orders`).
    """
    if len(captions) != 2:
        raise ZsbenchError(f"FashionIQ queries have 2 captions, got {len(captions)}.")
    a, b = (c.strip(".?, ") for c in captions)
    return f"{a} and {b}", f"{b} and {a}"


# --------------------------------------------------------------------------- FashionIQ

_FIQ_LAYOUT = (
    "captions/cap.<dress|shirt|toptee>.<val|test>.json, "
    "image_splits/split.<category>.<split>.json, images/<name>.png"
)


def read_fashioniq(
    root: str | Path, split: str = "val", category: str = "dress", image_root=None
) -> CIRSplit:
    """FashionIQ ``category`` (dress / shirt / toptee): queries and that category's gallery.

    All caption files' triplets are kept (no de-duplication of references: SEARLE's metrics use
    them all); the gallery is ``image_splits/split.<category>.<split>.json`` in file order.
    """
    if category not in FASHIONIQ_CATEGORIES:
        raise ZsbenchError(f"FashionIQ category must be one of {FASHIONIQ_CATEGORIES}.")
    if split not in ("train", "val", "test"):
        raise ZsbenchError(f"FashionIQ split must be train, val or test, got {split!r}.")
    root = Path(root)
    cap_path = root / "captions" / f"cap.{category}.{split}.json"
    caps = _load_json(cap_path, "FashionIQ captions", _FIQ_LAYOUT)
    gallery = _load_json(
        root / "image_splits" / f"split.{category}.{split}.json", "split", _FIQ_LAYOUT
    )
    queries = []
    for i, e in enumerate(caps):
        _require(e, ("candidate", "captions"), cap_path, i)
        targets = (e["target"],) if "target" in e else ()
        queries.append(
            CIRQuery(
                query_id=f"{category}-{i}",
                reference=e["candidate"],
                captions=tuple(e["captions"]),
                targets=targets,
                category=category,
            )
        )
    names = [str(n) for n in gallery]
    paths = {n: f"images/{n}.png" for n in names}
    for q in queries:
        for n in (q.reference, *q.targets):
            paths.setdefault(n, f"images/{n}.png")
    return CIRSplit(
        "fashioniq",
        split,
        queries,
        names,
        Path(image_root) if image_root else root,
        paths,
        category=category,
        gallery_source=f"image_splits/split.{category}.{split}.json",
        layout="images/<name>.png (or .jpg)",
    )


# --------------------------------------------------------------------------- CIRR

_CIRR_LAYOUT = (
    "<root>/cirr/captions/cap.rc2.<split>.json, <root>/cirr/image_splits/split.rc2.<split>.json, "
    "images at the split file's relative paths under <root> (dev/<name>.png, test1/<name>.png)"
)


def read_cirr(root: str | Path, split: str = "val", image_root=None) -> CIRSplit:
    """CIRR rc2 ``val`` / ``test1`` (alias ``test``): queries with ``img_set``, all split images.

    ``root`` is the CIRR folder (holding ``cirr/``) or its ``cirr/`` annotation folder; the
    image root defaults to the folder that holds ``cirr/``.
    """
    if split not in CIRR_SPLITS:
        raise ZsbenchError(f"CIRR split must be one of {sorted(CIRR_SPLITS)}, got {split!r}.")
    split = CIRR_SPLITS[split]
    root = Path(root)
    ann = root / "cirr" if (root / "cirr" / "captions").is_dir() else root
    cap_path = ann / "captions" / f"cap.rc2.{split}.json"
    caps = _load_json(cap_path, "CIRR captions", _CIRR_LAYOUT)
    rel = _load_json(ann / "image_splits" / f"split.rc2.{split}.json", "split", _CIRR_LAYOUT)
    queries = []
    for i, e in enumerate(caps):
        _require(e, ("pairid", "reference", "caption", "img_set"), cap_path, i)
        queries.append(
            CIRQuery(
                query_id=str(e["pairid"]),
                reference=e["reference"],
                captions=(e["caption"],),
                targets=(e["target_hard"],) if "target_hard" in e else (),
                img_set=tuple(e["img_set"]["members"]),
            )
        )
    return CIRSplit(
        "cirr",
        split,
        queries,
        list(rel),
        Path(image_root) if image_root else ann.parent,
        dict(rel),
        gallery_source=f"image_splits/split.rc2.{split}.json",
        layout=f"{_CIRR_IMAGE_DIR[split]}/<name>.png (paths from split.rc2.{split}.json)",
    )


# --------------------------------------------------------------------------- CIRCO

_CIRCO_LAYOUT = (
    "annotations/<val|test>.json, COCO2017_unlabeled/unlabeled2017/<12-digit id>.jpg, "
    "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"
)


def _coco_file(image_id: str) -> str:
    return f"COCO2017_unlabeled/unlabeled2017/{int(image_id):012d}.jpg"


def read_circo(
    root: str | Path,
    split: str = "val",
    image_root=None,
    gallery=None,
    annotation_gallery: bool = False,
) -> CIRSplit:
    """CIRCO ``val`` / ``test``: queries (targets = ``gt_img_ids``, main target first).

    The official gallery is every COCO 2017 unlabeled image (123,403), listed by
    ``COCO2017_unlabeled/annotations/image_info_unlabeled2017.json`` under the image root;
    without that file it is an error, because ranking a smaller gallery inflates every metric.
    ``annotation_gallery=True`` asks for the sorted union of the annotations' image ids
    instead (for tests and for scoring ranked lists, which needs no gallery; ``gallery_source``
    records it); ``gallery`` (a list of image ids) sets it explicitly. Image names are the ids
    as strings.
    """
    if split not in CIRCO_SPLITS:
        raise ZsbenchError(f"CIRCO split must be one of {CIRCO_SPLITS}, got {split!r}.")
    root = Path(root)
    img_root = Path(image_root) if image_root else root
    ann_path = root / "annotations" / f"{split}.json"
    anns = _load_json(ann_path, "CIRCO annotations", _CIRCO_LAYOUT)
    queries = []
    for i, e in enumerate(anns):
        _require(e, ("id", "reference_img_id", "relative_caption"), ann_path, i)
        gts = [str(x) for x in e.get("gt_img_ids", [])]
        if "target_img_id" in e and (not gts or gts[0] != str(e["target_img_id"])):
            raise ZsbenchError(f"{ann_path}: query {e['id']}: target_img_id is not gt_img_ids[0].")
        queries.append(
            CIRQuery(
                query_id=str(e["id"]),
                reference=str(e["reference_img_id"]),
                captions=(e["relative_caption"],),
                targets=tuple(gts),
                shared_concept=e.get("shared_concept", ""),
            )
        )
    info = img_root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
    if gallery is not None:
        names, source = [str(g) for g in gallery], "given"
    elif info.is_file():
        imgs = _load_json(info, "COCO image info", _CIRCO_LAYOUT)["images"]
        names, source = [str(im["id"]) for im in imgs], "image_info_unlabeled2017.json"
    elif not annotation_gallery:
        raise ZsbenchError(
            f"CIRCO's gallery list {info} is missing: the official gallery is all 123,403 COCO "
            "2017 unlabeled images it lists (download: docs/cir.md). Without it only the "
            "annotations' own images could be ranked, which inflates every metric; ask for "
            "that explicitly with --set dataset.annotation_gallery=true (recorded in the "
            "result, not comparable to published numbers)."
        )
    else:
        ids = {int(q.reference) for q in queries} | {int(t) for q in queries for t in q.targets}
        names = [str(i) for i in sorted(ids)]
        source = "annotation image ids only (not the official gallery)"
    paths = {n: _coco_file(n) for n in names}
    for q in queries:
        for n in (q.reference, *q.targets):
            paths.setdefault(n, _coco_file(n))
    return CIRSplit(
        "circo",
        split,
        queries,
        names,
        img_root,
        paths,
        gallery_source=source,
        layout="COCO2017_unlabeled/unlabeled2017/<12-digit id>.jpg",
    )
