"""Feature extraction benchmark: does extraction run at the backbone's speed?

In one run, on the same images:
  forward   the backbone alone on images already decoded into one tensor (channels_last,
            inference mode, bf16 autocast on CUDA: zsbench.features.forward), best of 3
  extract   zsbench.features._extract: the real loader (decode + transform in DataLoader
            workers) overlapped with the same forward passes, cold (no feature cache)
  serial    the old way for reference: no workers, default memory layout
Target: extract >= 0.9 x forward (images/s). Exits 1 when the target is missed.

Data: the real Sketchy slice (`sketchy21-mini`, $ZSBENCH_DATA, default ../shared/data), the
first `--per-class` sketches and photos of each of its 21 classes, at the backbone's 224 px.

Usage:  python benchmarks/features.py [--per-class 8] [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zsbench.backbones import create_backbone  # noqa: E402
from zsbench.features import _extract, extraction_workers, forward, prepare_backbone  # noqa: E402
from zsbench.registry import DATASETS  # noqa: E402

TARGET = 0.9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=8, help="sketches and photos per class")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    args = ap.parse_args()
    os.environ.setdefault("ZSBENCH_DATA", str(ROOT.parent / "shared" / "data"))
    device = torch.device(args.device)

    dm = DATASETS.get("sketchy21-mini")(max_per_class=args.per_class)
    dm.setup()
    model, info = create_backbone(args.backbone, "default")
    dm.set_normalization(info.mean, info.std)
    n = len(dm.items)
    print(
        f"feature extraction benchmark: {n} images (sketchy21-mini, {args.per_class} sketches + "
        f"{args.per_class} photos per class), {args.backbone}, device={device.type}, "
        f"torch={torch.__version__}, threads={torch.get_num_threads()}, "
        f"loader workers={extraction_workers(dm.num_workers)}, cpus={os.cpu_count()}, "
        f"python={platform.python_version()}"
    )

    # warm-up: imports, allocator, one batch through both paths (untimed)
    net = prepare_backbone(model, device)
    dataset = dm.all_items_dataset()
    t0 = time.perf_counter()
    images = torch.stack([dataset[i]["image"] for i in range(n)])
    decode_s = time.perf_counter() - t0
    with torch.inference_mode():
        forward(net, images[: dm.eval_batch_size], device)

    def timed_forward() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, n, dm.eval_batch_size):
                forward(net, images[i : i + dm.eval_batch_size], device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def timed_extract() -> float:
        start = time.perf_counter()
        _extract(model, dm, device, progress=False)
        return time.perf_counter() - start

    def timed_serial() -> float:
        plain = model.to(device).eval().to(memory_format=torch.contiguous_format)
        loader = torch.utils.data.DataLoader(dataset, batch_size=dm.eval_batch_size)
        start = time.perf_counter()
        with torch.no_grad():
            for batch in loader:
                plain(batch["image"].to(device))
        return time.perf_counter() - start

    results = {}
    contenders = (("forward", timed_forward), ("extract", timed_extract), ("serial", timed_serial))
    for name, fn in contenders:
        best = min(fn() for _ in range(args.repeats))  # the same rule for every contender
        results[name] = n / best
        print(f"[{name:<8}] {best:7.2f} s  ->  {n / best:7.1f} images/s (best of {args.repeats})")
    print(f"[decode  ] {decode_s:7.2f} s  ->  {n / decode_s:7.1f} images/s (one process, untimed)")
    ratio = results["extract"] / results["forward"]
    ok = ratio >= TARGET
    print(
        f"\nextraction / forward-only throughput: {ratio:.2f}x (target >= {TARGET}x)  "
        f"{'OK' if ok else 'MISS'};  extraction / old serial loader: "
        f"{results['extract'] / results['serial']:.2f}x"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
