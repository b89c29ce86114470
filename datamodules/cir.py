"""The ZS-CIR data contract: query / gallery loaders per evaluation group, and training data.

A CIR datamodule reads one split of a dataset (through zsbench.cir_readers or the synthetic
generator) into evaluation *groups*: one for CIRR, CIRCO and the synthetic data, one per
category for FashionIQ (each category has its own gallery and is scored separately). Batches:

  query    {"reference": images, "text": modification texts, "index"}; FashionIQ adds
           "text_reversed" (its two captions in the other order, see fashioniq_caption_pair)
           and "caption_1", "caption_2" (as written, for a method's own caption rule)
  gallery  {"image", "index"}

Zero-shot methods never train on the benchmark's CIR triplets. They train on what `train_on`
names: unlabelled images {"image", "index"}, captions {"text"}, or text triplets
{"reference_caption", "modification", "target_caption"}. The synthetic dataset provides all
three from its training combinations (never in val / test); on real datasets the user points
at them (`train_images=DIR`, `train_captions=FILE`, `train_triplets=FILE`), as the papers train
on CC3M / ImageNet images or caption corpora that are not part of the benchmarks.

Images go through CLIP's preprocessing (bicubic resize of the short side, centre crop,
normalisation with the method's statistics, set by the runner); training images too, unless
the method asks for Pic2Word's random resized crop (`set_train_crop`). `skip_bad=true` skips
unreadable training images as they are met (counted in the result's split_manifest);
evaluation images are never skipped, since that would change the benchmark.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from zsbench.cir_readers import (
    FASHIONIQ_CATEGORIES,
    CIRSplit,
    fashioniq_caption_pair,
    read_circo,
    read_cirr,
    read_fashioniq,
)
from zsbench.config import find_root
from zsbench.datamodules.base import load_image, make_loader
from zsbench.errors import ZsbenchError
from zsbench.metrics.cir import CIRLabels

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
TRIPLET_KEYS = ("reference_caption", "modification", "target_caption")
# other names the released triplet files use for a key: RTD's official LLM_triplets.json
# (CompoDiff's, read by RTD's loader.py) calls the modification "conditioning_caption"
TRIPLET_ALIASES = {"conditioning_caption": "modification"}


@dataclasses.dataclass(frozen=True)
class SplitRecord:
    """The evaluated split's name (the result path's `<split>`) and its annotation hash."""

    name: str
    hash: str


@dataclasses.dataclass
class EvalGroup:
    """Queries and gallery scored together: `name` is "" or the FashionIQ category."""

    name: str
    data: CIRSplit


def clip_transform(size: int, mean, std) -> T.Compose:
    """CLIP's preprocessing: bicubic resize of the shorter side, centre crop, normalise."""
    return T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


# --------------------------------------------------------------------------- datasets


class GalleryDataset(Dataset):
    def __init__(self, dm: CIRDataModule, data: CIRSplit) -> None:
        self.dm, self.data = dm, data

    def __len__(self) -> int:
        return len(self.data.gallery)

    def __getitem__(self, i: int) -> dict:
        image = self.data.load_image(self.data.gallery[i])
        return {"image": self.dm.transform(image), "index": i}


class QueryDataset(Dataset):
    def __init__(self, dm: CIRDataModule, data: CIRSplit) -> None:
        self.dm, self.data = dm, data

    def __len__(self) -> int:
        return len(self.data.queries)

    def __getitem__(self, i: int) -> dict:
        q = self.data.queries[i]
        out = {"reference": self.dm.transform(self.data.load_image(q.reference)), "index": i}
        if len(q.captions) == 2:  # FashionIQ: both caption orders, and the raw captions
            out["text"], out["text_reversed"] = fashioniq_caption_pair(q.captions)
            out["caption_1"], out["caption_2"] = q.captions  # for a method's own rule
        else:
            out["text"] = q.caption
        return out


class ImageFolderDataset(Dataset):
    def __init__(self, dm: CIRDataModule, paths: list[Path]) -> None:
        self.dm, self.paths = dm, paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        """Image `i`; with `dataset.skip_bad=true` an unreadable file is noted (the result
        counts it) and the next readable one is served in its place."""
        n = len(self.paths)
        for k in range(n):
            j = (i + k) % n
            try:
                image = load_image(str(self.paths[j]))
            except ZsbenchError:
                if not self.dm.skip_bad:
                    raise
                self.dm.note_bad(str(self.paths[j]))
                continue
            return {"image": self.dm.train_transform(image), "index": j}
        raise ZsbenchError(f"none of the {n} training images can be read (dataset.skip_bad=true).")


class RecordDataset(Dataset):
    """Text records: {"text": caption} or triplet dicts, served as they are."""

    def __init__(self, records: list[dict]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return self.records[i]


# --------------------------------------------------------------------------- base


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


class CIRDataModule(L.LightningDataModule):
    """Base class: subclasses implement `read_groups()` and, for training data they ship,
    `own_train_images()` / `own_train_captions()` / `own_train_triplets()`."""

    split_keys = ("split",)  # named by the split in the result path (zsbench.identity)

    task = "cir"
    protocol: ClassVar[str]  # the metric protocol of zsbench.metrics.cir

    def __init__(
        self,
        split: str = "val",
        image_size: int = 224,
        train_images: str | None = None,
        train_captions: str | None = None,
        train_triplets: str | None = None,
        max_train_items: int | None = None,
        skip_bad: bool = False,
    ) -> None:
        super().__init__()
        if max_train_items is not None and int(max_train_items) < 1:
            raise ZsbenchError(f"max_train_items must be >= 1 or null, got {max_train_items}.")
        self.split_name = split
        self.image_size = int(image_size)
        self.train_sources = {
            "images": train_images,
            "captions": train_captions,
            "text_triplets": train_triplets,
        }
        self.max_train_items = max_train_items
        # unreadable training images are skipped when they are met (a corpus such as CC3M is
        # too large to decode up front), each noted in a file that loader workers append to
        self.skip_bad = bool(skip_bad)
        self._bad_log = os.path.join(
            tempfile.gettempdir(), f"zsbench-bad-images-{os.getpid()}-{uuid.uuid4().hex[:8]}.txt"
        )
        atexit.register(_remove_quietly, self._bad_log)
        self.batch_size, self.eval_batch_size, self.num_workers = 64, 256, 0
        self.mean: tuple[float, ...] = (0.5, 0.5, 0.5)
        self.std: tuple[float, ...] = (0.5, 0.5, 0.5)
        self.groups: list[EvalGroup] = []
        # True only for `zsbench submit`: a split with hidden targets is embedded, not scored
        self.hidden_labels_ok = False
        self._ready = False

    # -- to implement ---------------------------------------------------------------------
    def read_groups(self) -> list[EvalGroup]:
        raise NotImplementedError

    def own_train_images(self) -> list[Path] | None:
        return None

    def own_train_captions(self) -> list[str] | None:
        return None

    def own_train_triplets(self) -> list[dict] | None:
        return None

    # -- set-up ---------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        self.groups = self.read_groups()
        for g in self.groups:
            if not g.data.has_targets and not self.hidden_labels_ok:
                raise ZsbenchError(
                    f"{g.data.dataset} split {g.data.split!r} has hidden labels: it is scored "
                    "by the official server. Benchmark on --set dataset.split=val, and write the "
                    "server's files with `zsbench submit` (docs/cir.md)."
                )
            if not g.data.queries:
                raise ZsbenchError(f"{g.data.dataset} {g.data.split} {g.name}: no queries.")
        self.split = SplitRecord(self.split_name, self._hash())
        self._ready = True

    def _hash(self) -> str:
        h = hashlib.sha256()
        for g in self.groups:
            h.update(f"{g.name}|{len(g.data.gallery)}\n".encode())
            for q in g.data.queries:
                h.update(json.dumps([q.reference, q.captions, q.targets, q.img_set]).encode())
            h.update("\n".join(g.data.gallery).encode())
        return h.hexdigest()[:16]

    def data_info(self) -> dict:
        return {}

    def labels(self, group: EvalGroup) -> CIRLabels:
        return group.data.labels()

    def note_bad(self, path: str) -> None:
        """Record an unreadable training image skipped under `skip_bad` (any process)."""
        print(f"zsbench: skipping unreadable training image {path}", file=sys.stderr)
        with open(self._bad_log, "a", encoding="utf-8") as f:
            f.write(path + "\n")

    @property
    def skipped_bad(self) -> list[str]:
        """The unreadable training images skipped so far (sorted, unique)."""
        try:
            with open(self._bad_log, encoding="utf-8") as f:
                return sorted({line.rstrip("\n") for line in f if line.strip()})
        except FileNotFoundError:
            return []

    def manifest(self) -> dict:
        """The split record that goes into every result."""
        bad = self.skipped_bad
        return {
            "n_skipped_bad": len(bad),
            "skipped_bad": bad[:20],
            "name": self.split.name,
            "hash": self.split.hash,
            "protocol": self.protocol,
            "groups": {
                g.name or "all": {
                    "n_queries": len(g.data.queries),
                    "n_gallery": len(g.data.gallery),
                    "gallery_source": g.data.gallery_source,
                }
                for g in self.groups
            },
            "counts": {
                "query": sum(len(g.data.queries) for g in self.groups),
                "gallery": sum(len(g.data.gallery) for g in self.groups),
            },
        }

    # -- images ---------------------------------------------------------------------------
    def set_normalization(self, mean, std) -> None:
        self.mean, self.std = tuple(mean), tuple(std)

    def set_augment(self, augment: bool) -> None:
        """CIR training images are not augmented (as in the official code); kept for the API."""

    def set_train_crop(self, scale: Sequence[float] | None) -> None:
        """Training images get `RandomResizedCrop(image_size, scale)` (bicubic) instead of the
        centre crop when `scale` is given: Pic2Word's recipe (official model/clip.py, scale
        (0.9, 1.0)). Evaluation images always take CLIP's resize + centre crop."""
        if scale is not None:
            lo, hi = (float(x) for x in scale)
            if not 0 < lo <= hi <= 1:
                raise ZsbenchError(
                    f"train_crop_scale={list(scale)}: use [low, high] with 0 < low <= high <= 1 "
                    "(the fraction of the image area a training crop keeps), or null."
                )
            scale = (lo, hi)
        self.train_crop_scale = scale

    @property
    def transform(self) -> T.Compose:
        key = (self.image_size, self.mean, self.std)
        if getattr(self, "_tf_key", None) != key:
            self._tf, self._tf_key = clip_transform(*key), key
        return self._tf

    @property
    def train_transform(self) -> T.Compose:
        """The transform of training images: `transform`, or the random crop of
        `set_train_crop`."""
        scale = getattr(self, "train_crop_scale", None)
        if scale is None:
            return self.transform
        key = (self.image_size, self.mean, self.std, scale)
        if getattr(self, "_train_tf_key", None) != key:
            crop = T.RandomResizedCrop(
                self.image_size, scale=scale, interpolation=T.InterpolationMode.BICUBIC
            )
            self._train_tf = T.Compose([crop, T.ToTensor(), T.Normalize(self.mean, self.std)])
            self._train_tf_key = key
        return self._train_tf

    # -- loaders --------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        return make_loader(dataset, shuffle, batch_size, self.num_workers)

    def query_dataloader(self, group: EvalGroup) -> DataLoader:
        return self._loader(QueryDataset(self, group.data), False, self.eval_batch_size)

    def gallery_dataloader(self, group: EvalGroup) -> DataLoader:
        return self._loader(GalleryDataset(self, group.data), False, self.eval_batch_size)

    def train_size(self, kind: str) -> int:
        return len(self._train_records(kind))

    def image_train_dataloader(self) -> DataLoader:
        """Unlabelled training images {"image", "index"}, shuffled."""
        return self._loader(
            ImageFolderDataset(self, self._train_records("images")), True, self.batch_size
        )

    def caption_train_dataloader(self) -> DataLoader:
        """Training captions {"text": list[str]}, shuffled."""
        records = [{"text": t} for t in self._train_records("captions")]
        return self._loader(RecordDataset(records), True, self.batch_size)

    def triplet_train_dataloader(self) -> DataLoader:
        """Text triplets {"reference_caption", "modification", "target_caption"}, shuffled."""
        return self._loader(
            RecordDataset(self._train_records("text_triplets")), True, self.batch_size
        )

    def _train_records(self, kind: str) -> list:
        cache = self.__dict__.setdefault("_train_cache", {})
        if kind not in cache:
            records = self._read_train(kind)
            if self.max_train_items is not None and len(records) > int(self.max_train_items):
                keep = np.random.default_rng(0).choice(
                    len(records), int(self.max_train_items), replace=False
                )
                records = [records[i] for i in sorted(keep)]
            cache[kind] = records
        return cache[kind]

    def _read_train(self, kind: str) -> list:
        source = self.train_sources[kind]
        if source is None:
            own = {
                "images": self.own_train_images,
                "captions": self.own_train_captions,
                "text_triplets": self.own_train_triplets,
            }[kind]()
            if own is not None:
                return own
            option = {"images": "train_images", "captions": "train_captions"}.get(
                kind, "train_triplets"
            )
            what = {
                "images": "a folder of unlabelled images (the papers: CC3M or ImageNet)",
                "captions": "a caption file (.txt, one per line, or a .json list of strings)",
                "text_triplets": "a .json / .jsonl file of {reference_caption, modification, "
                "target_caption} records",
            }[kind]
            raise ZsbenchError(
                f"this method trains on {kind} and dataset {type(self).__name__} ships none: "
                f"pass --set dataset.{option}=<path> with {what}."
            )
        if kind == "images":
            return read_image_folder(source)
        if kind == "captions":
            return read_captions(source)
        return read_triplets(source)


# --------------------------------------------------------------------------- training files


def read_image_folder(folder: str | Path) -> list[Path]:
    """Every image file under `folder` (recursive), sorted."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ZsbenchError(
            f"dataset.train_images={str(folder)!r} is not a folder. Give a folder of unlabelled "
            f"images ({', '.join(IMAGE_SUFFIXES)}; sub-folders are read too)."
        )
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ZsbenchError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}.")
    return paths


def _read_file(path: str | Path, option: str) -> tuple[Path, str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ZsbenchError(f"dataset.{option}={str(path)!r}: no such file.")
    return p, p.read_text(encoding="utf-8")


def read_captions(path: str | Path) -> list[str]:
    """Captions from a .txt file (one per line, blank lines skipped) or a .json list."""
    p, text = _read_file(path, "train_captions")
    if p.suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise ZsbenchError(f"{p} must hold a JSON list of caption strings.")
        captions = [x.strip() for x in data]
    else:
        captions = [line.strip() for line in text.splitlines()]
    captions = [c for c in captions if c]
    if not captions:
        raise ZsbenchError(f"{p} holds no captions.")
    return captions


def read_triplets(path: str | Path) -> list[dict]:
    """Text triplets from a .json list or a .jsonl file of records with TRIPLET_KEYS (or
    their TRIPLET_ALIASES, as the official files ship)."""
    p, text = _read_file(path, "train_triplets")
    try:
        if p.suffix == ".jsonl":
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
    except ValueError as e:
        raise ZsbenchError(f"{p} is not valid JSON ({e}).") from e
    if not isinstance(data, list) or not data:
        raise ZsbenchError(f"{p} must hold a non-empty list of triplet records.")
    out = []
    for i, r in enumerate(data):
        if isinstance(r, dict):
            r = {**{TRIPLET_ALIASES.get(k, k): v for k, v in r.items()}, **r}
        if not isinstance(r, dict) or any(not isinstance(r.get(k), str) for k in TRIPLET_KEYS):
            raise ZsbenchError(
                f"{p}: record {i} needs string fields {', '.join(TRIPLET_KEYS)} (or "
                f"{', '.join(f'{a} for {k}' for a, k in TRIPLET_ALIASES.items())})."
            )
        out.append({k: r[k] for k in TRIPLET_KEYS})
    return out


# --------------------------------------------------------------------------- datasets


class SyntheticCIR(CIRDataModule):
    """Synthetic composed queries over shape x colour x pattern x size (embedded, seconds)."""

    protocol = "circo"

    def __init__(
        self,
        split: str = "test",
        n_shapes: int = 6,
        n_colours: int = 6,
        n_patterns: int = 3,
        instances: int = 4,
        render_size: int = 64,
        data_seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        queries_per_image: int = 1,
        p_two_changes: float = 0.5,
        n_text_triplets: int = 2000,
        cache: str | None = None,
        image_size: int = 224,
        max_train_items: int | None = None,
        skip_bad: bool = False,
    ) -> None:
        super().__init__(
            split=split, image_size=image_size, max_train_items=max_train_items, skip_bad=skip_bad
        )
        self.params = dict(
            n_shapes=n_shapes,
            n_colours=n_colours,
            n_patterns=n_patterns,
            instances=instances,
            image_size=render_size,
            seed=data_seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            queries_per_image=queries_per_image,
            p_two_changes=p_two_changes,
            n_text_triplets=n_text_triplets,
        )
        self.cache = cache

    def data_root(self) -> Path:
        from zsbench.features import cache_dir

        key = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:12]
        return (Path(self.cache) if self.cache else cache_dir() / "data") / f"synthetic-cir-{key}"

    def _root(self) -> Path:
        from zsbench.datamodules.synthetic_cir import write_synthetic_cir

        return write_synthetic_cir(self.data_root(), **self.params)

    def read_groups(self) -> list[EvalGroup]:
        from zsbench.datamodules.synthetic_cir import read_synthetic_cir

        return [EvalGroup("", read_synthetic_cir(self._root(), self.split_name))]

    def _train_images_json(self) -> dict:
        images = json.loads((self._root() / "images.json").read_text())
        return {n: a for n, a in images.items() if a["partition"] == "train"}

    def own_train_images(self) -> list[Path]:
        root = self._root()
        return [root / "images" / f"{n}.png" for n in self._train_images_json()]

    def own_train_captions(self) -> list[str]:
        return [a["caption"] for a in self._train_images_json().values()]

    def own_train_triplets(self) -> list[dict]:
        from zsbench.datamodules.synthetic_cir import text_triplets

        return text_triplets(self._root())


class RealCIRDataModule(CIRDataModule):
    """A real CIR dataset under `root` (or $ZSBENCH_DATA: DIR, DIR/<name> or DIR/cir/<name>)."""

    def __init__(
        self,
        root: str | None = None,
        split: str = "val",
        image_root: str | None = None,
        image_size: int = 224,
        train_images: str | None = None,
        train_captions: str | None = None,
        train_triplets: str | None = None,
        max_train_items: int | None = None,
        skip_bad: bool = False,
    ) -> None:
        super().__init__(
            split=split,
            image_size=image_size,
            train_images=train_images,
            train_captions=train_captions,
            train_triplets=train_triplets,
            max_train_items=max_train_items,
            skip_bad=skip_bad,
        )
        self.root = root
        self.image_root = image_root

    # a folder holding one of these is the dataset's annotation folder
    markers: ClassVar[tuple[str, ...]] = ()
    # zsbench.cir_readers function reading one split: (folder, split, image_root) -> CIRSplit
    reader: ClassVar[Callable | None] = None

    def read_groups(self) -> list[EvalGroup]:
        """One evaluation group: the whole split, read by `reader`."""
        reader = type(self).reader
        return [EvalGroup("", reader(self.dataset_dir(), self.split_name, self.image_root))]

    def dataset_dir(self) -> Path:
        """`root` itself, root/<name>, root/cir/<name> or root/<NAME>: the first holding the
        dataset's annotation folders."""
        name = self.protocol  # the dataset's folder name: cirr, circo or fashioniq
        found = find_root(self.root)
        if found is None:
            raise ZsbenchError(
                f"no data root for {name}: pass --set dataset.root=<the {name} folder> or set "
                f"ZSBENCH_DATA (a folder holding {name}/ or cir/{name}/). Layouts: docs/cir.md."
            )
        for cand in (found, found / name, found / "cir" / name, found / name.upper()):
            if any((cand / m).is_dir() for m in self.markers):
                return cand
        raise ZsbenchError(
            f"no {name} annotations under {found} (looked in it, {name}/ and cir/{name}/ for "
            f"{' or '.join(m + '/' for m in self.markers)}). Pass --set dataset.root=<the {name} "
            "folder>; layouts and downloads: docs/cir.md."
        )


class CIRR(RealCIRDataModule):
    """CIRR rc2 (Liu et al., ICCV 2021): R@1/5/10/50 without the reference, R_subset@1/2/3."""

    protocol = "cirr"
    markers = ("captions", "cirr/captions")
    reader = read_cirr


class CIRCO(RealCIRDataModule):
    """CIRCO (Baldrati et al., ICCV 2023): mAP@5/10/25/50 over COCO 2017 unlabeled images."""

    protocol = "circo"
    markers = ("annotations",)

    def __init__(self, annotation_gallery: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        # True: rank only the annotations' own images when image_info_unlabeled2017.json is
        # missing (not the official gallery; split_manifest.gallery_source records it)
        self.annotation_gallery = bool(annotation_gallery)

    def read_groups(self) -> list[EvalGroup]:
        split = read_circo(
            self.dataset_dir(),
            self.split_name,
            self.image_root,
            annotation_gallery=self.annotation_gallery,
        )
        return [EvalGroup("", split)]


class FashionIQ(RealCIRDataModule):
    """FashionIQ (Wu et al., CVPR 2021): R@10/R@50 per category and their mean."""

    protocol = "fashioniq"
    markers = ("image_splits",)

    def __init__(self, categories: str = ",".join(FASHIONIQ_CATEGORIES), **kwargs) -> None:
        super().__init__(**kwargs)
        cats = [c.strip() for c in str(categories).split(",") if c.strip()]
        bad = [c for c in cats if c not in FASHIONIQ_CATEGORIES]
        if bad or not cats:
            raise ZsbenchError(
                f"dataset.categories={categories!r}: use a comma-separated subset of "
                f"{','.join(FASHIONIQ_CATEGORIES)}."
            )
        self.categories = cats

    def read_groups(self) -> list[EvalGroup]:
        root = self.dataset_dir()
        return [
            EvalGroup(c, read_fashioniq(root, self.split_name, c, self.image_root))
            for c in self.categories
        ]
