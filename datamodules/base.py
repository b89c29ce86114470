"""The ZS-SBIR data contract shared by every dataset.

A datamodule lists its items (path, class, domain) and its split (seen / unseen classes); this
base class turns them into the protocol's four partitions:

  train    seen-class sketches and photos, minus a held-out fraction   (training)
  val      the held-out seen-class items                               (model selection)
  query    unseen-class sketches                                       (final evaluation only)
  gallery  unseen-class photos                                         (final evaluation only)

Generalized ZS-SBIR (`protocol="generalized"`, `--set eval.protocol=generalized`): as in
SEM-PCYC's official code (`--gzs-sbir`), seen-class sketches and photos join the queries and
the gallery, 20 % as many as the unseen ones of each domain (`generalized_fraction`), so a
method that maps unseen sketches onto seen classes is punished. Unlike that code, which draws
them from the training files, zsbench holds them out of training (whole instances where
sketches name their photo), drawn with a seed fixed by the split hash and recorded in the
manifest; validation keeps its own held-out items.

Batches are dicts: `image` (or `feature` once `use_features` was called), `label`, `domain`
(0 sketch, 1 photo) and `index` (position in `items`). Training labels are 0..S-1 over the seen
classes; unseen classes get S..S+U-1, which only the evaluator sees.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from zsbench.datamodules.transforms import eval_transform, train_transform
from zsbench.errors import ZsbenchError
from zsbench.splits import Split

SKETCH, PHOTO = 0, 1
DOMAINS = {"sketch": SKETCH, "photo": PHOTO}
PROTOCOLS = ("zero-shot", "generalized")


@dataclasses.dataclass(frozen=True)
class Item:
    path: str
    label: str  # class name
    domain: int  # SKETCH or PHOTO


def _stable_fraction(text: str) -> float:
    """A number in [0, 1) fixed by `text`: deterministic train/val assignment across runs."""
    return int(hashlib.md5(text.encode()).hexdigest()[:8], 16) / 2**32


class ItemDataset(Dataset):
    """Items of one partition: images through a transform, or rows of a feature array."""

    def __init__(self, dm: SBIRDataModule, indices: np.ndarray, train: bool = False) -> None:
        self.dm = dm
        self.indices = indices
        self.train = train

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        idx = int(self.indices[i])
        item = self.dm.items[idx]
        out = {"label": self.dm.label_ids[idx], "domain": item.domain, "index": idx}
        out["feature" if self.dm.features is not None else "image"] = self.dm.row(idx, self.train)
        return out


class PairDataset(Dataset):
    """Seen-class (sketch, photo) pairs for methods that learn a sketch -> photo mapping.

    One pair per training sketch: the photo it was drawn from when the file names say so
    (Sketchy: `<photo-id>-<n>.png` <- `<photo-id>.jpg`) and `pairing="instance"`, otherwise a
    photo of its class drawn afresh at every access (torch's global RNG, which the runner seeds).
    """

    def __init__(self, dm: SBIRDataModule, indices: np.ndarray, pairing: str = "instance") -> None:
        if pairing not in ("instance", "class"):
            raise ZsbenchError(f"pairing must be 'instance' or 'class', got {pairing!r}.")
        self.dm = dm
        items = dm.items
        self.sketches = [int(i) for i in indices if items[i].domain == SKETCH]
        photos: dict[str, list[int]] = {}
        by_stem: dict[tuple[str, str], int] = {}
        for i in indices:
            if items[i].domain == PHOTO:
                photos.setdefault(items[i].label, []).append(int(i))
                by_stem[(items[i].label, Path(items[i].path).stem)] = int(i)
        self.photos = {c: np.array(v) for c, v in photos.items()}
        self.partner: dict[int, int] = {}
        if pairing == "instance":
            for i in self.sketches:
                stem = Path(items[i].path).stem.rsplit("-", 1)[0]
                if (items[i].label, stem) in by_stem:
                    self.partner[i] = by_stem[(items[i].label, stem)]
        lonely = {items[i].label for i in self.sketches} - set(self.photos)
        if lonely:
            raise ZsbenchError(f"Seen classes without training photos: {sorted(lonely)[:5]}.")

    def __len__(self) -> int:
        return len(self.sketches)

    def __getitem__(self, k: int) -> dict:
        i = self.sketches[k]
        j = self.partner.get(i)
        if j is None:
            pool = self.photos[self.dm.items[i].label]
            j = int(pool[torch.randint(len(pool), ()).item()])
        return {
            "sketch": self.dm.row(i, train=True),
            "photo": self.dm.row(j, train=True),
            "label": self.dm.label_ids[i],
            "index": i,
        }


class TripletDataset(PairDataset):
    """(sketch anchor, positive photo of its class, negative photo of another class) triplets,
    as triplet-loss methods (Doodle2Search) sample them: one per training sketch, the positive
    and negative drawn afresh at every access (the positive is the drawn-from photo when
    `pairing="instance"` and the names say so)."""

    def __init__(self, dm: SBIRDataModule, indices: np.ndarray, pairing: str = "class") -> None:
        super().__init__(dm, indices, pairing)
        self.classes = sorted(self.photos)
        if len(self.classes) < 2:
            raise ZsbenchError("Triplets need photos of at least two seen classes.")

    def __getitem__(self, k: int) -> dict:
        out = super().__getitem__(k)
        own = self.classes.index(self.dm.items[out["index"]].label)
        other = int(torch.randint(len(self.classes) - 1, ()).item())
        other += other >= own  # any class but the anchor's
        pool = self.photos[self.classes[other]]
        j = int(pool[torch.randint(len(pool), ()).item()])
        out["negative"] = self.dm.row(j, train=True)
        out["negative_label"] = self.dm.label_ids[j]
        return out


def make_loader(dataset: Dataset, shuffle: bool, batch_size: int, num_workers: int) -> DataLoader:
    """The DataLoader every datamodule uses (workers kept alive between epochs)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def load_image(path: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as err:
        raise ZsbenchError(
            f"Cannot read image {path}: {err}. Replace the file, or pass "
            f"--set dataset.skip_bad=true to skip unreadable images (counted in the result)."
        ) from err


def _check_unseen_classes(dm, part: dict[str, list[int]]) -> None:
    """Every unseen class needs queries (sketches) and gallery items (photos): a class whose
    folder lost its files would otherwise be dropped from the queries silently, changing the
    number under the same split name and hash."""
    counts = {c: [0, 0] for c in dm.split.unseen}
    for side, name in ((0, "query"), (1, "gallery")):
        for i in part[name]:
            counts[dm.items[i].label][side] += 1
    empty = {c: n for c, n in counts.items() if 0 in n}
    if empty:
        listed = ", ".join(f"{c} ({q} sketches, {g} photos)" for c, (q, g) in empty.items())
        raise ZsbenchError(
            f"{type(dm).__name__}, split {dm.split.name!r}: unseen class(es) without sketches or "
            f"photos: {listed}. Restore their files under the data root (or, with "
            f"dataset.skip_bad=true, they were all unreadable); a split without them is "
            f"another split: name its unseen classes with --set dataset.unseen=[...]."
        )


def _hold_out_seen(dm, part: dict[str, list[int]], fraction: float) -> dict:
    """Generalized ZS-SBIR: move seen-class training items to the queries (sketches) and the
    gallery (photos), `fraction` x the unseen count of each domain (SEM-PCYC's `perc = 0.2`).
    Instances (items sharing `holdout_key`) are drawn in a random order fixed by the split
    hash; an instance is taken while a domain it holds still needs items, and all of its items
    leave training (those beyond a domain's quota are held out unused), so no held-out photo's
    sketch is trained on. Returns what the manifest records."""
    need = {
        SKETCH: int(fraction * len(part["query"])),
        PHOTO: int(fraction * len(part["gallery"])),
    }
    instances: dict[str, list[int]] = {}
    for i in part["train"]:
        instances.setdefault(dm.holdout_key(dm.items[i]), []).append(i)
    seed = int(dm.split.hash[:8], 16)
    keys = sorted(instances)
    order = np.random.default_rng(seed).permutation(len(keys))
    taken = {SKETCH: [], PHOTO: []}
    removed: set[int] = set()
    for k in order:
        if all(len(taken[d]) >= need[d] for d in need):
            break
        members = instances[keys[k]]
        if not any(len(taken[dm.items[i].domain]) < need[dm.items[i].domain] for i in members):
            continue
        for i in members:
            d = dm.items[i].domain
            if len(taken[d]) < need[d]:
                taken[d].append(i)
            removed.add(i)
    short = {d: need[d] - len(taken[d]) for d in need if len(taken[d]) < need[d]}
    if short:
        raise ZsbenchError(
            f"{type(dm).__name__}: generalized ZS-SBIR needs {need[SKETCH]} seen sketches and "
            f"{need[PHOTO]} seen photos held out of training, but the seen classes' training "
            f"items give only {need[SKETCH] - short.get(SKETCH, 0)} and "
            f"{need[PHOTO] - short.get(PHOTO, 0)}; lower eval.generalized_fraction."
        )
    part["train"] = [i for i in part["train"] if i not in removed]
    part["query"] = sorted(taken[SKETCH]) + part["query"]
    part["gallery"] = sorted(taken[PHOTO]) + part["gallery"]
    return {
        "fraction": fraction,
        "seed": seed,
        "n_seen_queries": len(taken[SKETCH]),
        "n_seen_gallery": len(taken[PHOTO]),
        "n_held_out_unused": len(removed) - len(taken[SKETCH]) - len(taken[PHOTO]),
        "definition": (
            "queries: unseen-class sketches + held-out seen-class sketches; gallery: "
            "unseen-class photos + held-out seen-class photos (each seen count = fraction x "
            "the unseen count, SEM-PCYC's --gzs-sbir); relevance: same class"
        ),
    }


def image_is_readable(path: str) -> bool:
    """Whether `path` decodes as an image (full decode: truncated files fail too)."""
    try:
        with Image.open(path) as img:
            img.load()
        return True
    except (OSError, ValueError):
        return False


class SBIRDataModule(L.LightningDataModule):
    """Base class: subclasses implement `scan()` -> items and `make_split(classes)` -> Split."""

    task = "sbir"
    split_keys: tuple[str, ...] = ()  # __init__ arguments that only choose the (named) split

    def __init__(
        self, image_size: int = 224, val_fraction: float = 0.1, skip_bad: bool = False
    ) -> None:
        super().__init__()
        if not 0.0 <= val_fraction < 1.0:
            raise ZsbenchError(f"val_fraction must be in [0, 1), got {val_fraction}.")
        self.image_size = image_size
        self.val_fraction = val_fraction
        self.skip_bad = skip_bad
        self.skipped_bad: list[str] = []
        self.batch_size, self.eval_batch_size, self.num_workers = 64, 256, 0
        self.mean: tuple[float, ...] = (0.5, 0.5, 0.5)
        self.std: tuple[float, ...] = (0.5, 0.5, 0.5)
        self.features: np.ndarray | None = None
        self.augment = True
        self.items: list[Item] = []
        self.protocol, self.generalized_fraction = "zero-shot", 0.2
        self.generalized: dict | None = None
        self._ready = False

    def set_protocol(self, protocol: str, generalized_fraction: float = 0.2) -> None:
        """Choose the test protocol before `setup` (the runner passes `eval.protocol`)."""
        if protocol not in PROTOCOLS:
            raise ZsbenchError(f"eval.protocol={protocol!r}: one of {', '.join(PROTOCOLS)}.")
        if not 0.0 < float(generalized_fraction) <= 1.0:
            raise ZsbenchError(
                f"eval.generalized_fraction must be in (0, 1], got {generalized_fraction}."
            )
        if self._ready and (protocol, generalized_fraction) != (
            self.protocol,
            self.generalized_fraction,
        ):
            raise ZsbenchError("set_protocol must come before setup().")
        self.protocol, self.generalized_fraction = protocol, float(generalized_fraction)

    @property
    def split_label(self) -> str:
        """The split as results and the leaderboard name it: the split's name, plus
        `-generalized` under that protocol (its numbers are never grouped with zero-shot
        ones)."""
        name = self.split.name
        return name if self.protocol == "zero-shot" else f"{name}-generalized"

    # -- to implement -------------------------------------------------------------------
    def scan(self) -> list[Item]:
        raise NotImplementedError

    def make_split(self, classes: list[str]) -> Split:
        raise NotImplementedError

    def holdout_key(self, item: Item) -> str:
        """What decides whether a seen-class item is held out for validation: its class,
        domain and file name, not the absolute path, so the same items are held out wherever
        a user keeps the data. Datasets whose sketches name their photo hold out instances."""
        return f"{item.label}/{item.domain}/{Path(item.path).name}"

    def fingerprint(self) -> str:
        """Identifies the data on disk (for the feature cache): a hash of the item list and of
        each file's size and modification time. Why not the bytes: hashing every image of
        Sketchy or QuickDraw-Ext would cost more than extracting its features; a file replaced
        in place (a new copy, an edit, a re-download) gets a new mtime, so it still misses."""
        h = hashlib.sha256()
        for it in self.items:
            try:
                st = os.stat(it.path)
                stamp = f"{st.st_size}|{st.st_mtime_ns}"
            except OSError:  # unreadable: extraction will name it (or skip_bad dropped it)
                stamp = "missing"
            h.update(f"{it.path}|{it.label}|{it.domain}|{stamp}\n".encode())
        return h.hexdigest()[:16]

    # -- the protocol -------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        items = sorted(self.scan(), key=lambda it: (it.domain, it.label, it.path))
        if not items:
            raise ZsbenchError(f"{type(self).__name__} found no images.")
        classes = sorted({it.label for it in items})
        self.split = self.make_split(classes)
        self.split.check(set(classes), type(self).__name__)
        keep = set(self.split.seen) | set(self.split.unseen)
        self.items = [it for it in items if it.label in keep]
        if self.skip_bad:
            good = [it for it in self.items if image_is_readable(it.path)]
            self.skipped_bad = sorted({it.path for it in self.items} - {it.path for it in good})
            self.items = good
        self.class_names = list(self.split.seen) + list(self.split.unseen)
        class_id = {c: i for i, c in enumerate(self.class_names)}
        self.label_ids = np.array([class_id[it.label] for it in self.items], dtype=np.int64)
        seen = set(self.split.seen)
        part: dict[str, list[int]] = {"train": [], "val": [], "query": [], "gallery": []}
        for i, it in enumerate(self.items):
            if it.label in seen:
                held_out = _stable_fraction(self.holdout_key(it)) < self.val_fraction
                part["val" if held_out else "train"].append(i)
            else:
                part["query" if it.domain == SKETCH else "gallery"].append(i)
        _check_unseen_classes(self, part)
        if self.protocol == "generalized":
            self.generalized = _hold_out_seen(self, part, self.generalized_fraction)
        for name in ("train", "query", "gallery"):
            if not part[name]:
                raise ZsbenchError(
                    f"{type(self).__name__}, split {self.split.name!r}: the {name} partition is "
                    f"empty (each unseen class needs sketches and photos, seen classes need data)."
                )
        self.partitions = {k: np.array(v, dtype=np.int64) for k, v in part.items()}
        self._ready = True

    @property
    def num_seen_classes(self) -> int:
        return len(self.split.seen)

    def data_info(self) -> dict:
        """Values a method may take as `__init__` arguments (the runner fills them in)."""
        return {
            "num_classes": self.num_seen_classes,
            "seen_class_names": list(self.split.seen),
            "feature_dim": None if self.features is None else int(self.features.shape[1]),
        }

    def manifest(self) -> dict:
        """The split record that goes into every result."""
        counts = {k: len(v) for k, v in self.partitions.items()}
        domains = Counter(self.items[i].domain for i in self.partitions["query"])
        return {
            "name": self.split.name,
            "hash": self.split.hash,
            "n_seen_classes": len(self.split.seen),
            "n_unseen_classes": len(self.split.unseen),
            "unseen_classes": list(self.split.unseen),
            "counts": counts,
            "query_domains": {k: domains.get(v, 0) for k, v in DOMAINS.items()},
            "n_skipped_bad": len(self.skipped_bad),
            "skipped_bad": self.skipped_bad[:20],
            "protocol": self.protocol,
            **({"generalized": self.generalized} if self.generalized else {}),
        }

    def unseen_photo_wnids(self) -> dict[str, set[str]]:
        """Unseen class -> WordNet ids in its photo file names (ImageNet-style `n0123_...`)."""
        from zsbench.leakage import photo_wnids

        out: dict[str, list[str]] = {c: [] for c in self.split.unseen}
        for i in self.partitions["gallery"]:
            if self.items[i].label in out:  # generalized: seen photos in the gallery too
                out[self.items[i].label].append(self.items[i].path)
        return {c: photo_wnids(paths) for c, paths in out.items()}

    def set_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = tuple(mean), tuple(std)
        self._train_tf = None

    def set_augment(self, augment: bool) -> None:
        """Augment training images (methods that train on images; never for cached features)."""
        self.augment = augment
        self._train_tf = None

    @property
    def transform(self):
        key = (self.image_size, self.mean, self.std)
        if getattr(self, "_eval_tf_key", None) != key:
            self._eval_tf, self._eval_tf_key = eval_transform(*key), key
        return self._eval_tf

    def train_transform(self, domain: int):
        if getattr(self, "_train_tf", None) is None:
            self._train_tf = {
                d: train_transform(d, self.image_size, self.mean, self.std) for d in (SKETCH, PHOTO)
            }
        return self._train_tf[domain]

    def transform_id(self) -> str:
        """A string naming the evaluation transform, part of the feature-cache key."""
        return f"resize{self.image_size}-mean{self.mean}-std{self.std}"

    def use_features(self, features: np.ndarray) -> None:
        """Serve rows of `features` (aligned with `items`) instead of images."""
        if len(features) != len(self.items):
            raise ZsbenchError(
                f"Feature array has {len(features)} rows for {len(self.items)} items."
            )
        self.features = features

    def row(self, idx: int, train: bool = False) -> torch.Tensor:
        """Item `idx` as a model input: its feature row, or its image, augmented when `train`
        and augmentation is on."""
        if self.features is not None:
            return torch.tensor(self.features[idx], dtype=torch.float32)
        image = load_image(self.items[idx].path)
        if train and self.augment:
            return self.train_transform(self.items[idx].domain)(image)
        return self.transform(image)

    # -- loaders --------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        return make_loader(dataset, shuffle, batch_size, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        """Seen-class items of both domains (augmented images, or features), shuffled."""
        return self._loader(
            ItemDataset(self, self.partitions["train"], train=True), True, self.batch_size
        )

    def paired_train_dataloader(self, pairing: str = "instance") -> DataLoader:
        """Seen-class (sketch, photo) pairs (see `PairDataset`), shuffled."""
        return self._loader(
            PairDataset(self, self.partitions["train"], pairing), True, self.batch_size
        )

    def triplet_train_dataloader(self, pairing: str = "class") -> DataLoader:
        """Seen-class (sketch, positive, negative) triplets (see `TripletDataset`), shuffled."""
        return self._loader(
            TripletDataset(self, self.partitions["train"], pairing), True, self.batch_size
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(ItemDataset(self, self.partitions["val"]), False, self.eval_batch_size)

    def query_dataloader(self) -> DataLoader:
        return self._loader(
            ItemDataset(self, self.partitions["query"]), False, self.eval_batch_size
        )

    def gallery_dataloader(self) -> DataLoader:
        return self._loader(
            ItemDataset(self, self.partitions["gallery"]), False, self.eval_batch_size
        )

    def subset_dataloader(self, indices) -> DataLoader:
        """Evaluation loader over the items at `indices` (positions in `items`), in that order:
        a DDP rank's share of a partition."""
        return self._loader(ItemDataset(self, np.asarray(indices)), False, self.eval_batch_size)

    def all_items_dataset(self) -> Dataset:
        """Every item once, in `items` order, evaluation transform (feature extraction)."""
        return ItemDataset(self, np.arange(len(self.items)))
