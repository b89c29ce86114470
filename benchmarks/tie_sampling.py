"""Expected VOC AP under ties (sake / voc / drcpl / zse-sbir specs): stacked draws against
one draw per ``rank_stats`` call, in the same run, on the same inputs.

The estimator (zsbench.metrics.tie_sampling) averages the VOC AP over random orders inside
tie groups, drawing until the standard error is below its target. Drawing one order per call
left small blocks of tied queries paying Python and dispatch overhead thousands of times;
stacking the 16 draws of a batch into one call gives the same numbers (the generator yields
the same values, sums are taken in the same order). The script checks the outputs are
bit-identical and prints the speed-up; it exits 1 when they differ or the stacked path is
more than 10 % slower (on large blocks both are compute-bound).

  python benchmarks/tie_sampling.py            # about 30 s on 2 cores
  python benchmarks/tie_sampling.py --quick    # the small case only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zsbench.evaluation import evaluate_sbir  # noqa: E402
from zsbench.metrics import per_query_values, tie_sampling  # noqa: E402


def _small(q: int):
    """q queries whose 12 scores form two tie groups of mixed relevance (every draw matters)."""
    s = torch.tensor([[1.0] * 6 + [0.0] * 6] * q)
    rel = torch.tensor([[1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0]] * q, dtype=torch.bool)
    return lambda: per_query_values(s, rel, "sake")["mAP@all"]


def _codes(n_query: int, n_gallery: int, bits: int = 64, classes: int = 10):
    """Binary codes scored by Hamming similarity (ties everywhere), as for sem-pcyc-binary."""
    g = np.random.default_rng(0)
    centres = g.choice([-1.0, 1.0], size=(classes, bits))
    ql = g.integers(0, classes, n_query)
    gl = g.integers(0, classes, n_gallery)

    def codes(labels):
        flip = g.random((len(labels), bits)) < 0.3
        return np.where(flip, -centres[labels], centres[labels])

    qf, gf = codes(ql), codes(gl)
    return lambda: torch.tensor(
        evaluate_sbir(qf, ql, gf, gl, spec="zse-sbir", similarity="dot", device="cpu")["metrics"][
            "mAP@all"
        ]
    )


def _time(fn, stack_elements: int, repeats: int):
    tie_sampling.STACK_ELEMENTS = stack_elements
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small cases only")
    ap.add_argument("--repeats", type=int, default=1, help="best of N (the reference is slow)")
    args = ap.parse_args()
    cases = {"per_query_values, 4 queries x 12 items, sake": _small(4)}
    if not args.quick:
        cases["evaluate_sbir, 200 x 5,000 64-bit codes, zse-sbir"] = _codes(200, 5000)
    stacked = tie_sampling.STACK_ELEMENTS
    ok = True
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}")
    print("| case | one draw per call (s) | stacked (s) | speed-up | identical |")
    print("|---|---:|---:|---:|---|")
    for name, fn in cases.items():
        fn()  # warm: imports, first calls
        t1, v1 = _time(fn, 0, args.repeats)
        t2, v2 = _time(fn, stacked, args.repeats)
        same = torch.equal(v1, v2)
        ok &= same and t2 <= 1.1 * t1  # the large case is compute-bound: about equal
        print(f"| {name} | {t1:.3f} | {t2:.3f} | {t1 / t2:.1f}x | {'yes' if same else 'NO'} |")
    tie_sampling.STACK_ELEMENTS = stacked
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
