"""Embedded synthetic ZS-SBIR dataset: sketches and photos of "pattern shape" classes.

A class is a combination of two visual attributes with word names, a shape and a pattern
(``"striped star"``, folder ``striped_star``). Unseen classes are new combinations of
attributes that all occur in seen classes, so that class-name embeddings carry meaning and
zero-shot transfer is possible.

* Sketch domain: black, jittered, hand-drawn-looking outline strokes on white; the pattern is
  drawn as strokes inside the outline (stripes as lines, dots as small circles, checks as a
  grid with hatched cells, ...); random stroke width, dropped stroke segments, random
  rotation, scale and position.
* Photo domain: the filled object with the pattern rendered in colour, shading and grain, on
  a solid, gradient or noise background; random rotation, scale, position and colours
  (colour is a nuisance, never a class attribute).

Every image is seeded from ``(seed, class, domain, index)``; output is identical across runs.
:func:`write_synthetic_sketchy` writes the real Sketchy folder layout, so the Sketchy reader
reads it unchanged.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import shutil
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "FORMAT_VERSION",
    "PATTERNS",
    "SHAPES",
    "class_names",
    "default_unseen",
    "parse_class",
    "photo_id",
    "render_image",
    "write_synthetic_sketchy",
]

FORMAT_VERSION = 1

# Order matters: ``class_names(n_shapes, n_patterns)`` uses the first n of each.
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "heart",
    "cross",
    "hexagon",
    "arrow",
    "moon",
    "diamond",
    "pentagon",
    "trapezoid",
)
PATTERNS: tuple[str, ...] = ("plain", "striped", "dotted", "checkered", "zigzag", "ringed")

DOMAINS = ("photo", "sketch")
_SUPERSAMPLE = {"sketch": 3, "photo": 2}  # thin strokes need more anti-aliasing than fills
_SKETCHY_SUB = Path("Sketchy") / "256x256"
_READY = "tx_000000000000_ready"


# --------------------------------------------------------------------------- classes / splits


def _check_sizes(n_shapes: int, n_patterns: int) -> None:
    for name, n, vocab in (("n_shapes", n_shapes, SHAPES), ("n_patterns", n_patterns, PATTERNS)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise ValueError(f"{name} must be an int, got {n!r}")
        if not 1 <= n <= len(vocab):
            raise ValueError(f"{name} must be in [1, {len(vocab)}] (vocabulary: {vocab}), got {n}")
    if n_shapes * n_patterns < 2:
        raise ValueError("need at least 2 classes (n_shapes * n_patterns >= 2)")


def class_names(n_shapes: int, n_patterns: int) -> list[str]:
    """Folder names ``<pattern>_<shape>`` of the first n shapes x first n patterns, sorted."""
    _check_sizes(n_shapes, n_patterns)
    return sorted(f"{p}_{s}" for s in SHAPES[:n_shapes] for p in PATTERNS[:n_patterns])


def parse_class(name: str) -> tuple[str, str]:
    """``"striped_star"`` -> ``("star", "striped")`` (shape, pattern)."""
    pattern, _, shape = name.partition("_")
    if shape not in SHAPES or pattern not in PATTERNS:
        raise ValueError(f"not a synthetic class name: {name!r} (expected '<pattern>_<shape>')")
    return shape, pattern


def _max_unseen(n_shapes: int, n_patterns: int) -> int:
    # every shape (row) and every pattern (column) must keep a seen cell
    return n_shapes * n_patterns - max(n_shapes, n_patterns)


def default_unseen(
    n_shapes: int, n_patterns: int, n_unseen: int | None = None, seed: int = 0
) -> list[str]:
    """Held-out combinations; every shape and every pattern still occurs in a seen class.

    Latin-square-like: with L = max(n_shapes, n_patterns) and M = min(...), the grid is cut
    into M wrapped diagonals of L cells each (one cell per long-side attribute, the short-side
    attributes evenly); unseen classes are whole diagonals in seeded order, then a seeded part
    of the next one. At most M - 1 full diagonals are used, so no attribute is fully held out,
    and unseen classes spread evenly over shapes and patterns. Default n_unseen: 25 % of the
    classes (at least 1). Returns sorted class names.
    """
    _check_sizes(n_shapes, n_patterns)
    total = n_shapes * n_patterns
    hi = _max_unseen(n_shapes, n_patterns)
    if n_unseen is None:
        n_unseen = min(max(1, round(0.25 * total)), hi)
    if isinstance(n_unseen, bool) or not isinstance(n_unseen, (int, np.integer)):
        raise ValueError(f"n_unseen must be an int or None, got {n_unseen!r}")
    if not 1 <= n_unseen <= hi:
        raise ValueError(
            f"n_unseen must be in [1, {hi}] for {n_shapes} shapes x {n_patterns} patterns "
            f"(every shape and pattern must stay in a seen class), got {n_unseen}"
        )
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EE1, n_shapes, n_patterns]))
    shapes = [SHAPES[i] for i in rng.permutation(n_shapes)]
    patterns = [PATTERNS[i] for i in rng.permutation(n_patterns)]
    long_, short = (shapes, patterns) if n_shapes >= n_patterns else (patterns, shapes)
    L, M = len(long_), len(short)
    chosen: list[tuple[str, str]] = []
    for k in rng.permutation(M):
        diag = [(long_[i], short[(i + int(k)) % M]) for i in range(L)]
        need = n_unseen - len(chosen)
        if need >= L:
            chosen.extend(diag)
        else:
            chosen.extend(diag[int(i)] for i in sorted(rng.permutation(L)[:need]))
        if len(chosen) >= n_unseen:
            break
    if n_shapes < n_patterns:
        chosen = [(b, a) for a, b in chosen]
    return sorted(f"{p}_{s}" for s, p in chosen)


# --------------------------------------------------------------------------- geometry


def _normalise(pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    pts = pts - (pts.min(0) + pts.max(0)) / 2
    return pts / np.sqrt((pts**2).sum(1)).max()


def _regular(n: int, r: float = 1.0, start: float = -math.pi / 2) -> np.ndarray:
    a = start + 2 * math.pi * np.arange(n) / n
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _make_outlines() -> dict[str, np.ndarray]:
    """Closed outlines (no repeated end point), y pointing down, max radius 1."""
    t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    out = {"circle": np.stack([np.cos(t), np.sin(t)], 1)}
    out["square"] = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    out["triangle"] = _regular(3)
    star = _regular(10)
    star[1::2] *= 0.45
    out["star"] = star
    hx = 16 * np.sin(t) ** 3
    hy = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    out["heart"] = np.stack([hx, hy], 1)
    w = 0.32
    out["cross"] = np.array(
        [[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w]]
        + [[-1, w], [-1, -w], [-w, -w]],
        float,
    )
    out["hexagon"] = _regular(6, start=0.0)
    out["arrow"] = np.array(
        [[-1, -0.2], [0.15, -0.2], [0.15, -0.6], [1, 0], [0.15, 0.6], [0.15, 0.2], [-1, 0.2]],
        float,
    )
    # crescent: unit circle minus a circle of radius r centred at (d, 0)
    d, r = 0.45, 0.85
    xi = (1 + d * d - r * r) / (2 * d)
    a0 = math.atan2(math.sqrt(1 - xi * xi), xi)
    outer = np.linspace(a0, 2 * math.pi - a0, 48)
    b0 = math.atan2(-math.sqrt(1 - xi * xi), xi - d)
    inner = np.linspace(b0, b0 - 2 * (math.pi + b0), 40)[1:-1]
    out["moon"] = np.concatenate(
        [
            np.stack([np.cos(outer), np.sin(outer)], 1),
            np.stack([d + r * np.cos(inner), r * np.sin(inner)], 1),
        ]
    )
    out["diamond"] = np.array([[0, -1], [0.62, 0], [0, 1], [-0.62, 0]], float)
    out["pentagon"] = _regular(5)
    out["trapezoid"] = np.array([[-0.5, -0.55], [0.5, -0.55], [1, 0.55], [-1, 0.55]], float)
    assert set(out) == set(SHAPES)
    return {k: _normalise(v) for k, v in out.items()}


_OUTLINES = _make_outlines()


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# Pattern scale per shape, so that thin shapes (star, moon) still show a few pattern periods.
_PATTERN_SCALE = {
    k: min(1.0, max(0.55, math.sqrt(_area(v) / math.pi))) for k, v in _OUTLINES.items()
}


def _resample_closed(poly: np.ndarray, n: int) -> np.ndarray:
    closed = np.vstack([poly, poly[:1]])
    seg = np.sqrt((np.diff(closed, axis=0) ** 2).sum(1))
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.linspace(0, cum[-1], n, endpoint=False)
    return np.stack([np.interp(s, cum, closed[:, 0]), np.interp(s, cum, closed[:, 1])], 1)


class _Pose:
    """Object (u, v) -> image (x, y) at supersampled resolution."""

    def __init__(self, rng: np.random.Generator, size: int, domain: str):
        S = size * _SUPERSAMPLE[domain]
        lo, hi = (0.26, 0.42) if domain == "sketch" else (0.24, 0.42)
        self.r = rng.uniform(lo, hi) * S
        slack = max(0.0, S / 2 - self.r * 1.02)
        self.cx = S / 2 + rng.uniform(-1, 1) * slack * 0.8
        self.cy = S / 2 + rng.uniform(-1, 1) * slack * 0.8
        self.theta = rng.uniform(0, 2 * math.pi)
        self.sx, self.sy = rng.uniform(0.9, 1.1, size=2)
        c, s = math.cos(self.theta), math.sin(self.theta)
        self.m = np.array([[c * self.sx, -s * self.sy], [s * self.sx, c * self.sy]]) * self.r

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        return uv @ self.m.T + np.array([self.cx, self.cy])

    def grid_uv(self, S: int) -> tuple[np.ndarray, np.ndarray]:
        inv = np.linalg.inv(self.m).astype(np.float32)
        dx = (np.arange(S, dtype=np.float32) + np.float32(0.5 - self.cx))[None, :]
        dy = (np.arange(S, dtype=np.float32) + np.float32(0.5 - self.cy))[:, None]
        return inv[0, 0] * dx + inv[0, 1] * dy, inv[1, 0] * dx + inv[1, 1] * dy


class _PatternParams:
    """Pattern geometry in object coordinates, shared by both domains."""

    def __init__(self, rng: np.random.Generator, shape: str, pattern: str):
        self.pattern = pattern
        self.phi = rng.uniform(0, math.pi)  # pattern orientation relative to the object
        base = {"striped": 0.34, "dotted": 0.42, "checkered": 0.5, "zigzag": 0.42, "ringed": 0.3}
        self.period = base.get(pattern, 0.4) * _PATTERN_SCALE[shape] * rng.uniform(0.85, 1.15)
        self.offset = [float(x) * self.period for x in rng.uniform(0, 1, size=2)]
        self.zig_wl = self.period * rng.uniform(0.9, 1.2)  # zigzag wavelength
        self.zig_amp = self.period * rng.uniform(0.3, 0.4)
        self.dot_r = self.period * rng.uniform(0.2, 0.27)
        self.centre = [float(x) for x in rng.uniform(-0.1, 0.1, size=2)]  # ring centre

    def rotate(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.phi), math.sin(self.phi)
        return c * u + s * v + self.offset[0], -s * u + c * v + self.offset[1]

    def unrotate(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = a - self.offset[0], b - self.offset[1]
        c, s = math.cos(self.phi), math.sin(self.phi)
        return np.stack([c * a - s * b, s * a + c * b], -1)

    def mask(self, u: np.ndarray, v: np.ndarray) -> np.ndarray | None:
        """Second-colour mask of the photo pattern (float 0/1), None for plain."""
        p = self.pattern
        if p == "plain":
            return None
        a, b = self.rotate(u, v)
        T = self.period
        if p == "striped":
            m = (b / T) % 1.0 < 0.5
        elif p == "dotted":
            da = a - np.round(a / T) * T
            db = b - np.round(b / T) * T
            m = da * da + db * db < self.dot_r**2
        elif p == "checkered":
            m = (np.floor(a / T) + np.floor(b / T)) % 2 == 0
        elif p == "zigzag":
            tri = np.abs((a / self.zig_wl) % 1.0 - 0.5) * 2  # triangle wave in [0, 1]
            m = ((b + self.zig_amp * tri) / T) % 1.0 < 0.45
        elif p == "ringed":
            rho = np.sqrt((u - self.centre[0]) ** 2 + (v - self.centre[1]) ** 2)
            m = (rho / T) % 1.0 < 0.5
        else:  # pragma: no cover - guarded by parse_class
            raise ValueError(p)
        return m.astype(np.float32)


# --------------------------------------------------------------------------- sketch domain


def _wobbly_line(p0, p1, rng: np.random.Generator, n: int, amp: float) -> np.ndarray:
    """Points from p0 to p1 with a smooth random perpendicular wobble (object units)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    t = np.linspace(0, 1, n)[:, None]
    walk = np.cumsum(rng.normal(0, 1, n))
    walk = walk - walk[0] - (walk[-1] - walk[0]) * t[:, 0]
    walk = walk / (np.abs(walk).max() + 1e-9) * amp * rng.uniform(0.3, 1.0)
    d = p1 - p0
    normal = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9)
    return p0 + t * d + walk[:, None] * normal


def _pattern_strokes(pp: _PatternParams, rng: np.random.Generator) -> list[np.ndarray]:
    """Pattern strokes (object coordinates), to be clipped to the object interior."""
    p, T, E = pp.pattern, pp.period, 1.3
    strokes: list[np.ndarray] = []
    ks = np.arange(math.floor(-E / T) - 1, math.ceil(E / T) + 2)
    jit = 0.025
    o0, o1 = pp.offset

    def near(a: float, b: float, margin: float) -> bool:  # rotation keeps distances
        return (a - o0) ** 2 + (b - o1) ** 2 < (1.15 + margin) ** 2

    if p == "striped" or p == "checkered":
        for k in ks:
            b = k * T + (0.0 if p == "checkered" else T / 2)
            if abs(b - o1) > 1.2:
                continue
            ab = _wobbly_line((-E, b), (E, b), rng, 10, jit)
            strokes.append(pp.unrotate(ab[:, 0], ab[:, 1]))
    if p == "checkered":
        for k in ks:
            if abs(k * T - o0) > 1.2:
                continue
            ab = _wobbly_line((k * T, -E), (k * T, E), rng, 10, jit)
            strokes.append(pp.unrotate(ab[:, 0], ab[:, 1]))
        # hatch every other cell with diagonal lines, like a hand-drawn checkerboard
        offsets = (-0.4, 0.0, 0.4) if rng.random() < 0.6 else (-0.5, -0.17, 0.17, 0.5)
        for i in ks:
            for j in ks:
                if (i + j) % 2 or not near((i + 0.5) * T, (j + 0.5) * T, 0.71 * T):
                    continue
                for c in offsets:
                    q = np.array(
                        [[max(c, 0), max(-c, 0)], [1 - max(-c, 0), 1 - max(c, 0)]]
                    ) * T + np.array([i * T, j * T])
                    q = q + rng.normal(0, 0.012, (2, 2))
                    strokes.append(pp.unrotate(q[:, 0], q[:, 1]))
    elif p == "dotted":
        circ = _regular(9, 1.0, start=rng.uniform(0, 2 * math.pi))
        for i in ks:
            for j in ks:
                if not near(i * T, j * T, pp.dot_r):
                    continue
                c = np.array([i * T, j * T]) + rng.normal(0, 0.02, 2)
                r = pp.dot_r * 0.75 * rng.uniform(0.8, 1.2)
                pts = c + r * circ * rng.uniform(0.9, 1.1, (len(circ), 1))
                pts = np.vstack([pts, pts[:2]])
                strokes.append(pp.unrotate(pts[:, 0], pts[:, 1]))
    elif p == "zigzag":
        a = np.arange(-E, E + pp.zig_wl / 2, pp.zig_wl / 2)
        for k in ks:
            if abs(k * T - o1) > 1.2 + pp.zig_amp:
                continue
            b = k * T - pp.zig_amp * (np.arange(len(a)) % 2) + rng.normal(0, 0.015, len(a))
            strokes.append(pp.unrotate(a + rng.normal(0, 0.015, len(a)), b))
    elif p == "ringed":
        for k in range(1, int(E / T) + 3):
            n = max(12, int(30 * k * T))
            ring = _regular(n, k * T, start=rng.uniform(0, 2 * math.pi))
            ring = ring * rng.uniform(0.97, 1.03, (n, 1)) + np.array(pp.centre)
            strokes.append(np.vstack([ring, ring[:2]]))
    return [st for st in strokes if _near_object(st)]


def _near_object(stroke: np.ndarray, reach: float = 1.2) -> bool:
    """Whether a stroke (object coordinates) may touch the object (inside radius ~1)."""
    pts = np.vstack([stroke, (stroke[:-1] + stroke[1:]) / 2])
    return bool(((pts**2).sum(1) < reach * reach).any())


def _outline_strokes(shape: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Hand-drawn outline: smooth wobble, a few strokes with small gaps/overlaps, drops."""
    n = 160
    pts = _resample_closed(_OUTLINES[shape], n)
    t = 2 * math.pi * np.arange(n) / n
    for k in (1, 2, 3, 5):
        amp = 0.035 / k * rng.normal(0, 1, 2)
        ph = rng.uniform(0, 2 * math.pi, 2)
        pts = pts + amp * np.stack([np.cos(k * t + ph[0]), np.sin(k * t + ph[1])], 1)
    pts = pts + rng.normal(0, 0.004, pts.shape)
    pts = np.roll(pts, int(rng.integers(n)), axis=0)
    k = int(rng.integers(4, 9))
    cuts = np.sort(rng.choice(np.arange(6, n - 6), size=k - 1, replace=False))
    bounds = np.concatenate([[0], cuts, [n]])
    # missing parts: drop up to two short stretches, at most ~18 % of the outline in all
    gaps: list[tuple[int, int]] = []
    budget = int(0.18 * n)
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        length = int(rng.integers(6, 18))
        if length > budget:
            break
        start = int(rng.integers(0, n - length))
        gaps.append((start, start + length))
        budget -= length
    keep = np.ones(n + 8, bool)
    for lo, hi in gaps:
        keep[lo:hi] = False
    strokes = []
    for i in range(k):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        hi = min(n, hi + int(rng.integers(0, 4)))  # small overlap into the next stroke
        idx = np.arange(lo, hi + 1)
        offset = rng.normal(0, 0.012, 2)
        # split the stroke where it crosses a gap
        runs = np.split(idx, np.flatnonzero(np.diff(keep[idx].astype(np.int8))) + 1)
        for run in runs:
            if len(run) >= 2 and keep[run[0]]:
                strokes.append(pts[run % n] + offset)
        if rng.random() < 0.12:  # occasional retrace of a stroke
            strokes.append(pts[idx % n] + offset + rng.normal(0, 0.02, 2))
    return strokes


def _render_sketch(shape: str, pattern: str, rng: np.random.Generator, size: int) -> Image.Image:
    ss = _SUPERSAMPLE["sketch"]
    S = size * ss
    pose = _Pose(rng, size, "sketch")
    pp = _PatternParams(rng, shape, pattern)
    width = max(1, round(rng.uniform(0.9, 2.4) * ss))
    ink = int(rng.integers(0, 40))

    canvas = Image.new("L", (S, S), 255)
    draw = ImageDraw.Draw(canvas)
    strokes = _pattern_strokes(pp, rng)
    if strokes:
        layer = Image.new("L", (S, S), 255)
        pdraw = ImageDraw.Draw(layer)
        pw = max(1, round(width * rng.uniform(0.6, 1.0)))
        for stroke in strokes:
            if rng.random() < 0.12:  # missing pattern strokes
                continue
            pdraw.line([tuple(p) for p in pose.to_image(stroke)], fill=ink, width=pw)
        # clip to the object interior, eroded by about one output pixel
        outline = [tuple(p) for p in pose.to_image(_OUTLINES[shape])]
        inside = Image.new("L", (S, S), 0)
        idraw = ImageDraw.Draw(inside)
        idraw.polygon(outline, fill=255)
        idraw.line(outline + outline[:1], fill=0, width=2 * ss, joint="curve")
        canvas.paste(layer, (0, 0), inside)
    for stroke in _outline_strokes(shape, rng):
        draw.line([tuple(p) for p in pose.to_image(stroke)], fill=ink, width=width, joint="curve")
    return canvas.reduce(ss).convert("RGB")


# --------------------------------------------------------------------------- photo domain


def _random_colour(rng: np.random.Generator, sat=(0.35, 1.0), val=(0.3, 1.0)) -> np.ndarray:
    h = rng.uniform()
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val))
    return np.array(rgb, np.float32) * 255


def _background(rng: np.random.Generator, S: int) -> np.ndarray:
    kind = int(rng.integers(3))
    if kind == 0:  # solid
        return np.broadcast_to(_random_colour(rng, (0.0, 0.8), (0.2, 1.0)), (S, S, 3))
    if kind == 1:  # linear gradient
        c0, c1 = _random_colour(rng, (0.0, 0.9)), _random_colour(rng, (0.0, 0.9))
        a = rng.uniform(0, 2 * math.pi)
        r = np.arange(S, dtype=np.float32) / S - 0.5
        t = np.float32(1.2 * math.cos(a)) * r[None, :] + np.float32(1.2 * math.sin(a)) * r[:, None]
        t = np.clip(t + 0.5, 0, 1)[..., None]
        return c0 * (1 - t) + c1 * t
    # smooth colour noise (blobs), like an out-of-focus scene
    g = int(rng.integers(3, 9))
    low = rng.uniform(0, 255, (g, g, 3)) * rng.uniform(0.3, 1.0) + rng.uniform(0, 100)
    low = np.clip(low, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(low, "RGB").resize((S, S), Image.BICUBIC), np.float32)


def _render_photo(shape: str, pattern: str, rng: np.random.Generator, size: int) -> Image.Image:
    ss = _SUPERSAMPLE["photo"]
    S = size * ss
    pose = _Pose(rng, size, "photo")
    pp = _PatternParams(rng, shape, pattern)
    bg = _background(rng, S)

    col_a = _random_colour(rng)
    h, s, v = colorsys.rgb_to_hsv(*(col_a / 255))
    if rng.random() < 0.5:  # contrasting hue
        h2 = (h + rng.uniform(0.25, 0.75)) % 1.0
        col_b = colorsys.hsv_to_rgb(h2, rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
    else:  # light/dark version of the same hue
        v2 = v - 0.55 if v > 0.6 else min(1.0, v + 0.5)
        col_b = colorsys.hsv_to_rgb(h, s * rng.uniform(0.3, 1.0), v2)
    col_b = np.array(col_b, np.float32) * 255

    u, v_ = pose.grid_uv(S)
    pm = pp.mask(u, v_)
    if pm is None:
        obj = np.broadcast_to(col_a, (S, S, 3))
    else:
        obj = col_a + pm[..., None] * (col_b - col_a)
    # shading: directional light in object space, radial falloff
    a = rng.uniform(0, 2 * math.pi)
    k = rng.uniform(0.1, 0.3)
    shade = 1 + np.float32(k * math.cos(a)) * u + np.float32(k * math.sin(a)) * v_
    shade -= np.float32(rng.uniform(0.0, 0.2)) * np.minimum(u * u + v_ * v_, 1)

    mask_img = Image.new("L", (S, S), 0)
    ImageDraw.Draw(mask_img).polygon([tuple(p) for p in pose.to_image(_OUTLINES[shape])], fill=255)
    m = np.asarray(mask_img, np.float32)[..., None] * np.float32(1 / 255)
    img = bg + m * (obj * shade[..., None] - bg)
    grain = rng.standard_normal((S, S, 1), dtype=np.float32) * np.float32(rng.uniform(2, 7))
    img = np.clip(img + grain + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(img, "RGB").reduce(ss)


# --------------------------------------------------------------------------- public rendering


def _rng(seed: int, cls: str, domain: str, index: int) -> np.random.Generator:
    ss = np.random.SeedSequence(
        [int(seed) & 0xFFFFFFFF, zlib.crc32(cls.encode()), DOMAINS.index(domain), int(index)]
    )
    return np.random.default_rng(ss)


def render_image(cls: str, domain: str, index: int, image_size: int = 96, seed: int = 0):
    """Render one RGB image of class ``cls`` ("striped_star") in ``domain`` ("photo"/"sketch").

    Deterministic in (seed, cls, domain, index, image_size).
    """
    shape, pattern = parse_class(cls)
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    rng = _rng(seed, cls, domain, index)
    render = _render_sketch if domain == "sketch" else _render_photo
    return render(shape, pattern, rng, int(image_size))


# --------------------------------------------------------------------------- dataset writer


def _wnid(cls: str) -> str:
    """A stable fake WordNet id per class (index in the full vocabulary grid)."""
    shape, pattern = parse_class(cls)
    return f"n{SHAPES.index(shape) * len(PATTERNS) + PATTERNS.index(pattern) + 1:08d}"


def photo_id(cls: str, k: int) -> str:
    """Photo id of the k-th (0-based) photo of a class, Sketchy style: ``n00000017_3``."""
    return f"{_wnid(cls)}_{k + 1}"


def _params(**kw) -> dict:
    return {k: (int(v) if not isinstance(v, bool) else v) for k, v in kw.items()}


def _validate(n_shapes, n_patterns, photos_per_class, sketches_per_class, image_size, seed):
    _check_sizes(n_shapes, n_patterns)
    for name, val, lo in (
        ("photos_per_class", photos_per_class, 1),
        ("sketches_per_class", sketches_per_class, 1),
        ("image_size", image_size, 16),
        ("seed", seed, 0),
    ):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)):
            raise ValueError(f"{name} must be an int, got {val!r}")
        if val < lo:
            raise ValueError(f"{name} must be >= {lo}, got {val}")
    if image_size > 1024:
        raise ValueError(f"image_size must be <= 1024, got {image_size}")


def _check_existing(meta_path: Path, meta: dict) -> bool:
    """True if a finished dataset with the same parameters is there; raise if different."""
    if not meta_path.is_file():
        return False
    try:
        old = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise RuntimeError(f"{meta_path} is unreadable ({e}); delete {meta_path.parent}") from e
    same = (
        old.get("format_version") == meta["format_version"] and old.get("params") == meta["params"]
    )
    if not same:
        raise ValueError(
            f"{meta_path.parent} already holds a synthetic dataset with different parameters:\n"
            f"  existing: format_version={old.get('format_version')} {old.get('params')}\n"
            f"  asked:    format_version={meta['format_version']} {meta['params']}\n"
            "Use a different cache folder, or delete the existing one."
        )
    return True


def write_synthetic_sketchy(
    root: str | os.PathLike,
    *,
    n_shapes: int = 8,
    n_patterns: int = 5,
    photos_per_class: int = 30,
    sketches_per_class: int = 30,
    image_size: int = 96,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write a synthetic dataset in the real Sketchy layout under ``root`` and return ``root``.

    ``root/Sketchy/256x256/photo/tx_000000000000_ready/<class>/<wnid>_<k>.jpg`` (RGB JPEG) and
    ``root/Sketchy/256x256/sketch/tx_000000000000_ready/<class>/<photo-id>-<n>.png`` (RGB PNG,
    black on white; sketch j of a class refers to photo ``j % photos_per_class``), plus
    ``root/synthetic.json`` (parameters, format version, classes, default unseen split).
    The "256x256" folder name is Sketchy's; the images are ``image_size`` square.

    Written once: a finished dataset with the same parameters is reused; different parameters
    raise ValueError. Generation happens in a temporary sibling folder renamed into place at
    the end, under a file lock, so an interrupted run leaves nothing that looks complete and
    concurrent callers wait for one another.
    """
    _validate(n_shapes, n_patterns, photos_per_class, sketches_per_class, image_size, seed)
    root = Path(root).absolute()
    classes = class_names(n_shapes, n_patterns)
    meta = {
        "format": "zsbench-synthetic-sketchy",
        "format_version": FORMAT_VERSION,
        "params": _params(
            n_shapes=n_shapes,
            n_patterns=n_patterns,
            photos_per_class=photos_per_class,
            sketches_per_class=sketches_per_class,
            image_size=image_size,
            seed=seed,
        ),
        "shapes": list(SHAPES[:n_shapes]),
        "patterns": list(PATTERNS[:n_patterns]),
        "classes": classes,
        "default_unseen": default_unseen(n_shapes, n_patterns, seed=seed),
        "layout": "Sketchy/256x256/{photo,sketch}/tx_000000000000_ready/<class>/",
    }
    meta_path = root / "synthetic.json"
    if _check_existing(meta_path, meta):  # fast path, no lock
        return root

    from filelock import FileLock

    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        if _check_existing(meta_path, meta):  # another process finished it meanwhile
            return root
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise ValueError(
                f"{root} exists, is not empty and has no synthetic.json; "
                "choose a new or empty folder for the synthetic dataset"
            )
        for stale in root.parent.glob(f".{root.name}.partial-*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root.parent / f".{root.name}.partial-{uuid.uuid4().hex[:12]}"
        try:
            _generate(tmp, classes, meta["params"], progress)
            (tmp / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n")
            if root.exists():
                root.rmdir()  # empty, checked above
            os.replace(tmp, root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root


def _generate(out: Path, classes: Sequence[str], p: dict, progress: bool) -> None:
    from zsbench.progress import progress as progress_bar

    n_ph, n_sk, size, seed = (
        p["photos_per_class"],
        p["sketches_per_class"],
        p["image_size"],
        p["seed"],
    )
    base = out / _SKETCHY_SUB
    total = len(classes) * (n_ph + n_sk)
    with progress_bar(total=total, desc="synthetic Sketchy", unit="img", enabled=progress) as bar:
        for cls in classes:
            pdir = base / "photo" / _READY / cls
            sdir = base / "sketch" / _READY / cls
            pdir.mkdir(parents=True)
            sdir.mkdir(parents=True)
            for k in range(n_ph):
                img = render_image(cls, "photo", k, size, seed)
                img.save(pdir / f"{photo_id(cls, k)}.jpg", quality=90)
                bar.update()
            for j in range(n_sk):
                img = render_image(cls, "sketch", j, size, seed)
                name = f"{photo_id(cls, j % n_ph)}-{j // n_ph + 1}.png"
                img.save(sdir / name, compress_level=1)
                bar.update()
