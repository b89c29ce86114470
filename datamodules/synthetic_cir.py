"""Embedded synthetic ZS-CIR dataset: objects with composable attributes and text edits.

An image shows one object with four attributes, ``shape x colour x pattern x size`` ("a large
red striped star"), in one of ``instances`` scenes: the scene (position, rotation, background,
colour jitter, pattern phase) depends only on the instance index, so the same scene exists for
every attribute combination. A query is (reference image, modification text that changes one or
two attributes: "change the colour to blue and make it dotted"); its main target is the same
scene with the changed attributes, and every scene of the target combination is a ground truth
(several per query, like CIRCO). The benchmark scores it with CIRCO's protocol (mAP@k over the
ground truths, R@k on the main target).

Combinations are partitioned into train / val / test; val and test combinations never occur in
training (each attribute value still does), so a model must compose attributes it has seen
separately. Text triplets (reference caption, modification, target caption) over training
combinations serve text-only training such as RTD's.

:func:`write_synthetic_cir` renders everything once into a folder (atomically, under a file
lock); :func:`read_synthetic_cir` returns a split as the real readers do
(:class:`zsbench.cir_readers.CIRSplit`). Files under the root::

    synthetic_cir.json               parameters, vocabulary, partitions of the combinations
    images/<shape>-<colour>-<pattern>-<size>-<instance>.png
    images.json                      {name: attributes, instance, partition, caption}
    annotations/<train|val|test>.json   queries
    text_triplets.json               text-only triplets over training combinations

:class:`SyntheticCIR` is the datamodule (`--dataset synthetic-cir`) over that folder.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from zsbench.cir_readers import CIRQuery, CIRSplit
from zsbench.datamodules.cir_base import CIRDataModule, EvalGroup
from zsbench.datamodules.synthetic_render import _OUTLINES  # the SBIR generator's shape outlines
from zsbench.errors import ZsbenchError

__all__ = [
    "ATTRIBUTES",
    "COLOURS",
    "FORMAT_VERSION",
    "PATTERNS",
    "SHAPES",
    "SIZES",
    "Combo",
    "SyntheticCIR",
    "caption",
    "combos",
    "modification_text",
    "partition_combos",
    "read_synthetic_cir",
    "render_cir_image",
    "text_triplets",
    "write_synthetic_cir",
]

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
ATTRIBUTES = ("shape", "colour", "pattern", "size")
SHAPES = ("circle", "square", "triangle", "star", "heart", "hexagon", "cross", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "blue": (40, 80, 220),
    "green": (40, 165, 60),
    "yellow": (235, 205, 40),
    "purple": (140, 60, 190),
    "orange": (240, 130, 30),
    "black": (30, 30, 30),
    "white": (245, 245, 245),
}
PATTERNS = ("plain", "striped", "dotted", "checkered")
SIZES = ("small", "large")
_PATTERN_NOUN = {"striped": "stripes", "dotted": "dots", "checkered": "checks"}
_RADIUS = {"small": 0.2, "large": 0.36}  # fraction of the image side
_SS = 2  # supersampling for anti-aliased edges

Combo = tuple[str, str, str, str]  # (shape, colour, pattern, size)


# --------------------------------------------------------------------------- vocabulary


def _vocab(n_shapes: int, n_colours: int, n_patterns: int) -> dict[str, tuple[str, ...]]:
    for name, n, full in (
        ("n_shapes", n_shapes, SHAPES),
        ("n_colours", n_colours, tuple(COLOURS)),
        ("n_patterns", n_patterns, PATTERNS),
    ):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= len(full):
            raise ZsbenchError(f"{name} must be an int in [2, {len(full)}], got {n!r}.")
    return {
        "shape": SHAPES[:n_shapes],
        "colour": tuple(COLOURS)[:n_colours],
        "pattern": PATTERNS[:n_patterns],
        "size": SIZES,
    }


def combos(vocab: dict[str, Sequence[str]]) -> list[Combo]:
    """Every attribute combination, in vocabulary order."""
    return [tuple(c) for c in itertools.product(*(vocab[a] for a in ATTRIBUTES))]


def image_name(combo: Combo, instance: int) -> str:
    return "-".join(combo) + f"-{instance}"


def caption(combo: Combo) -> str:
    """ "a large red striped star" (plain objects: "a small blue plain circle")."""
    shape, colour, pattern, size = combo
    return f"a {size} {colour} {pattern} {shape}"


def _edit_phrase(attr: str, old: str, new: str, rng: np.random.Generator) -> str:
    if attr == "shape":
        options = [
            f"make it a {new}",
            f"change the shape to a {new}",
            f"turn the {old} into a {new}",
        ]
    elif attr == "colour":
        options = [
            f"make it {new}",
            f"change the colour to {new}",
            f"paint it {new} instead of {old}",
        ]
    elif attr == "size":
        options = (
            ["make it bigger", "enlarge it"] if new == "large" else ["make it smaller", "shrink it"]
        )
    elif new == "plain":
        options = ["remove the pattern", "make it plain"]
    elif old == "plain":
        options = [f"add {_PATTERN_NOUN[new]}", f"make it {new}"]
    else:
        options = [f"make it {new}", f"change the pattern to {_PATTERN_NOUN[new]}"]
    return options[int(rng.integers(len(options)))]


def modification_text(ref: Combo, tgt: Combo, rng: np.random.Generator) -> str:
    """A templated instruction turning ``ref`` into ``tgt`` (one or two changed attributes)."""
    changed = [i for i in range(len(ATTRIBUTES)) if ref[i] != tgt[i]]
    if not 1 <= len(changed) <= 2:
        raise ZsbenchError(f"a modification changes 1 or 2 attributes, not {len(changed)}.")
    order = list(rng.permutation(changed))
    parts = [_edit_phrase(ATTRIBUTES[i], ref[i], tgt[i], rng) for i in order]
    return " and ".join(parts)


# --------------------------------------------------------------------------- partitions


def partition_combos(
    all_combos: Sequence[Combo], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Combo]]:
    """Seeded train / val / test combinations; every attribute value keeps a train combination.

    Val and test take ``round(fraction * N)`` (at least 1) combinations in seeded order,
    skipping any whose removal would leave an attribute value without a training combination.
    """
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < f < 1:
            raise ZsbenchError(f"{name} must be in (0, 1), got {f}.")
    if val_fraction + test_fraction >= 0.9:
        raise ZsbenchError("val_fraction + test_fraction must leave >= 10 % for training.")
    n = len(all_combos)
    want = {"test": max(1, round(test_fraction * n)), "val": max(1, round(val_fraction * n))}
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC1B]))
    train_count = {(a, c[a]): 0 for c in all_combos for a in range(len(ATTRIBUTES))}
    for c in all_combos:
        for a in range(len(ATTRIBUTES)):
            train_count[(a, c[a])] += 1
    out: dict[str, list[Combo]] = {"train": [], "val": [], "test": []}
    for i in rng.permutation(n):
        c = all_combos[int(i)]
        part = next((p for p in ("test", "val") if len(out[p]) < want[p]), "train")
        if part != "train" and all(train_count[(a, c[a])] > 1 for a in range(len(ATTRIBUTES))):
            for a in range(len(ATTRIBUTES)):
                train_count[(a, c[a])] -= 1
        else:
            part = "train"
        out[part].append(c)
    if not out["val"] or not out["test"]:
        raise ZsbenchError("too few combinations to hold out val and test; raise the vocabulary.")
    return {p: sorted(v) for p, v in out.items()}


# --------------------------------------------------------------------------- rendering


def _scene(seed: int, instance: int) -> dict:
    """The instance's nuisance parameters, shared by every attribute combination."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5CE, int(instance)]))
    return {
        "offset": rng.uniform(-1, 1, 2),
        "angle": float(rng.uniform(-0.35, 0.35)),
        "background": rng.uniform(150, 235, 3) + rng.uniform(-15, 15, 3),
        "jitter": rng.uniform(-18, 18, 3),
        "phase": rng.uniform(0, 1, 2),
        "stripe_angle": float(rng.uniform(0, math.pi)),
        "grain": float(rng.uniform(2, 6)),
        "noise_seed": int(rng.integers(2**31)),
    }


def _pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray, sc: dict) -> np.ndarray | None:
    """Where the pattern's second colour goes, in object coordinates (radius 1)."""
    period = 0.42
    pu, pv = sc["phase"] * period
    if pattern == "plain":
        return None
    if pattern == "striped":
        a = sc["stripe_angle"]
        w = u * math.cos(a) + v * math.sin(a) + pu
        return ((w / period) % 1.0) < 0.5
    if pattern == "dotted":
        du = ((u + pu) / period) % 1.0 - 0.5
        dv = ((v + pv) / period) % 1.0 - 0.5
        return du * du + dv * dv < 0.3**2
    cu = np.floor((u + pu) / period).astype(np.int64)
    cv = np.floor((v + pv) / period).astype(np.int64)
    return (cu + cv) % 2 == 0


def render_cir_image(
    combo: Combo, instance: int, image_size: int = 64, seed: int = 0
) -> Image.Image:
    """Render (shape, colour, pattern, size) in scene ``instance``; deterministic, RGB."""
    shape, colour, pattern, size = combo
    if shape not in SHAPES or colour not in COLOURS or pattern not in PATTERNS or size not in SIZES:
        raise ZsbenchError(f"not a synthetic CIR combination: {combo!r}.")
    sc = _scene(seed, instance)
    S = int(image_size) * _SS
    r = _RADIUS[size] * S
    slack = S / 2 - r * 1.05
    cx, cy = S / 2 + sc["offset"] * slack * 0.9
    ca, sa = math.cos(sc["angle"]), math.sin(sc["angle"])
    pts = _OUTLINES[shape]
    poly = [(cx + r * (ca * x - sa * y), cy + r * (sa * x + ca * y)) for x, y in pts]
    mask_img = Image.new("L", (S, S), 0)
    ImageDraw.Draw(mask_img).polygon(poly, fill=255)
    mask = np.asarray(mask_img, np.float32)[..., None] / 255

    ys, xs = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    dx, dy = (xs - cx) / r, (ys - cy) / r
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy  # object frame
    base = np.clip(np.array(COLOURS[colour], np.float32) + sc["jitter"], 0, 255)
    second = base * 0.4 if base.mean() > 90 else base + 0.6 * (255 - base)
    pm = _pattern_mask(pattern, u, v, sc)
    obj = np.broadcast_to(base, (S, S, 3)) if pm is None else np.where(pm[..., None], second, base)
    img = sc["background"].astype(np.float32) + mask * (obj - sc["background"])
    noise = np.random.default_rng(sc["noise_seed"]).standard_normal((S, S, 1), dtype=np.float32)
    img = np.clip(img + noise * sc["grain"] + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(img, "RGB").reduce(_SS)


# --------------------------------------------------------------------------- queries


def _targets_by_changes(ref: Combo, allowed: set[Combo], vocab: dict) -> dict[int, list[Combo]]:
    out: dict[int, list[Combo]] = {1: [], 2: []}
    for n in (1, 2):
        for attrs in itertools.combinations(range(len(ATTRIBUTES)), n):
            pools = [[x for x in vocab[ATTRIBUTES[a]] if x != ref[a]] for a in attrs]
            for values in itertools.product(*pools):
                t = list(ref)
                for a, x in zip(attrs, values):
                    t[a] = x
                if tuple(t) in allowed:
                    out[n].append(tuple(t))
    return out


def _pick_target(ref, allowed, vocab, p_two: float, rng) -> Combo | None:
    cands = _targets_by_changes(ref, allowed, vocab)
    first = 2 if rng.random() < p_two else 1
    for n in (first, 3 - first):
        if cands[n]:
            return cands[n][int(rng.integers(len(cands[n])))]
    return None


def _queries(part: list[Combo], p: dict, vocab: dict, split_index: int) -> list[dict]:
    allowed = set(part)
    rng = np.random.default_rng(np.random.SeedSequence([p["seed"], 0x9E7, split_index]))
    out = []
    for ref in part:
        for inst in range(p["instances"]):
            for _ in range(p["queries_per_image"]):
                tgt = _pick_target(ref, allowed, vocab, p["p_two_changes"], rng)
                if tgt is None:
                    continue
                others = [i for i in range(p["instances"]) if i != inst]
                out.append(
                    {
                        "id": len(out),
                        "reference": image_name(ref, inst),
                        "modification": modification_text(ref, tgt, rng),
                        "target": image_name(tgt, inst),
                        "gt": [image_name(tgt, i) for i in [inst, *others]],
                        "reference_caption": caption(ref),
                        "target_caption": caption(tgt),
                        "changed": [a for a, x, y in zip(ATTRIBUTES, ref, tgt) if x != y],
                    }
                )
    return out


def _text_triplets(train: list[Combo], p: dict, vocab: dict) -> list[dict]:
    allowed = set(train)
    rng = np.random.default_rng(np.random.SeedSequence([p["seed"], 0x7E7]))
    out = []
    for _ in range(p["n_text_triplets"]):
        ref = train[int(rng.integers(len(train)))]
        tgt = _pick_target(ref, allowed, vocab, p["p_two_changes"], rng)
        if tgt is not None:
            out.append(
                {
                    "reference_caption": caption(ref),
                    "modification": modification_text(ref, tgt, rng),
                    "target_caption": caption(tgt),
                }
            )
    return out


# --------------------------------------------------------------------------- writer


def _params(**kw) -> dict:
    ints = ("n_shapes", "n_colours", "n_patterns", "instances", "image_size", "seed")
    ints += ("queries_per_image", "n_text_triplets")
    for k in ints:
        v = kw[k]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ZsbenchError(f"{k} must be an int, got {v!r}.")
    if kw["instances"] < 2:
        raise ZsbenchError("instances must be >= 2 (several ground truths per query).")
    if not 16 <= kw["image_size"] <= 1024:
        raise ZsbenchError(f"image_size must be in [16, 1024], got {kw['image_size']}.")
    if kw["queries_per_image"] < 1 or kw["n_text_triplets"] < 0 or kw["seed"] < 0:
        raise ZsbenchError("queries_per_image must be >= 1, n_text_triplets and seed >= 0.")
    if not 0 <= kw["p_two_changes"] <= 1:
        raise ZsbenchError(f"p_two_changes must be in [0, 1], got {kw['p_two_changes']}.")
    return {k: (int(v) if k in ints else float(v)) for k, v in kw.items()}


def _existing(meta_path: Path, meta: dict) -> bool:
    if not meta_path.is_file():
        return False
    try:
        old = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise ZsbenchError(f"{meta_path} is unreadable ({e}); delete {meta_path.parent}.") from e
    if (old.get("format_version"), old.get("params")) != (FORMAT_VERSION, meta["params"]):
        raise ZsbenchError(
            f"{meta_path.parent} holds a synthetic CIR dataset with other parameters "
            f"({old.get('params')}); asked for {meta['params']}. Use another folder or delete it."
        )
    return True


def write_synthetic_cir(
    root: str | os.PathLike,
    *,
    n_shapes: int = 6,
    n_colours: int = 6,
    n_patterns: int = 3,
    instances: int = 4,
    image_size: int = 64,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    queries_per_image: int = 1,
    p_two_changes: float = 0.5,
    n_text_triplets: int = 2000,
    progress: bool = False,
) -> Path:
    """Render the dataset under ``root`` once and return ``root``.

    A finished dataset with the same parameters is reused; other parameters raise. Rendering
    goes to a temporary sibling renamed into place, under a file lock, so an interrupted run
    leaves nothing that looks complete and concurrent callers wait for one another.
    """
    p = _params(
        n_shapes=n_shapes,
        n_colours=n_colours,
        n_patterns=n_patterns,
        instances=instances,
        image_size=image_size,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        queries_per_image=queries_per_image,
        p_two_changes=p_two_changes,
        n_text_triplets=n_text_triplets,
    )
    vocab = _vocab(n_shapes, n_colours, n_patterns)
    parts = partition_combos(combos(vocab), val_fraction, test_fraction, seed)
    meta = {
        "format": "zsbench-synthetic-cir",
        "format_version": FORMAT_VERSION,
        "params": p,
        "vocabulary": {a: list(v) for a, v in vocab.items()},
        "partitions": {k: ["-".join(c) for c in v] for k, v in parts.items()},
    }
    root = Path(root).absolute()
    meta_path = root / "synthetic_cir.json"
    if _existing(meta_path, meta):
        return root

    from filelock import FileLock

    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        if _existing(meta_path, meta):
            return root
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise ZsbenchError(f"{root} exists, is not empty and holds no synthetic_cir.json.")
        for stale in root.parent.glob(f".{root.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root.parent / f".{root.name}.partial-{uuid.uuid4().hex[:12]}"
        try:
            _generate(tmp, parts, p, vocab, progress)
            (tmp / "synthetic_cir.json").write_text(json.dumps(meta, indent=1) + "\n")
            if root.exists():
                root.rmdir()
            os.replace(tmp, root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root


def _generate(out: Path, parts: dict, p: dict, vocab: dict, progress: bool) -> None:
    from zsbench.progress import progress as progress_bar

    (out / "images").mkdir(parents=True)
    (out / "annotations").mkdir()
    images = {}
    todo = [(part, c, i) for part in SPLITS for c in parts[part] for i in range(p["instances"])]
    for part, c, i in progress_bar(todo, desc="synthetic CIR", unit="img", enabled=progress):
        name = image_name(c, i)
        render_cir_image(c, i, p["image_size"], p["seed"]).save(
            out / "images" / f"{name}.png", compress_level=1
        )
        attrs = dict(zip(ATTRIBUTES, c))
        images[name] = {**attrs, "instance": i, "partition": part, "caption": caption(c)}
    (out / "images.json").write_text(json.dumps(images, indent=0) + "\n")
    for k, part in enumerate(SPLITS):
        qs = _queries(parts[part], p, vocab, k)
        (out / "annotations" / f"{part}.json").write_text(json.dumps(qs, indent=0) + "\n")
    triplets = _text_triplets(parts["train"], p, vocab)
    (out / "text_triplets.json").write_text(json.dumps(triplets, indent=0) + "\n")


# --------------------------------------------------------------------------- reader


def read_synthetic_cir(root: str | os.PathLike, split: str = "test") -> CIRSplit:
    """A rendered split as a :class:`CIRSplit` (gallery = every image of the split's combos)."""
    if split not in SPLITS:
        raise ZsbenchError(f"synthetic CIR split must be one of {SPLITS}, got {split!r}.")
    root = Path(root)
    if not (root / "synthetic_cir.json").is_file():
        raise ZsbenchError(
            f"{root} holds no synthetic CIR dataset (synthetic_cir.json); "
            "create it with zsbench.datamodules.synthetic_cir.write_synthetic_cir(root)."
        )
    images = json.loads((root / "images.json").read_text())
    anns = json.loads((root / "annotations" / f"{split}.json").read_text())
    gallery = [n for n, a in images.items() if a["partition"] == split]
    queries = [
        CIRQuery(
            query_id=str(a["id"]),
            reference=a["reference"],
            captions=(a["modification"],),
            targets=tuple(a["gt"]),
        )
        for a in anns
    ]
    return CIRSplit(
        "synthetic-cir",
        split,
        queries,
        gallery,
        root,
        {n: f"images/{n}.png" for n in images},
        gallery_source="images.json",
        layout="images/<name>.png",
    )


def text_triplets(root: str | os.PathLike) -> list[dict]:
    """The text-only (reference caption, modification, target caption) training triplets."""
    return json.loads((Path(root) / "text_triplets.json").read_text())


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
        return write_synthetic_cir(self.data_root(), **self.params)

    def read_groups(self) -> list[EvalGroup]:
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
        return text_triplets(self._root())
