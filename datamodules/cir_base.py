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
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from zsbench.cir_readers import (
    CIRSplit,
    fashioniq_caption_pair,
)
from zsbench.datamodules.base import load_image, make_loader
from zsbench.datamodules.cir_training_files import read_captions, read_image_folder, read_triplets
from zsbench.errors import ZsbenchError
from zsbench.metrics.cir import CIRLabels


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
