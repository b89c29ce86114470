"""Training-throughput benchmark: RPKD training steps, images per second.

Builds RPKD (student + frozen teacher) and its training loader on a dataset (default: the
embedded synthetic one; `--dataset sketchy21-mini` with ZSBENCH_DATA set for real images),
computes the teacher's class centres, then times `--steps` optimisation steps (after
`--warmup` untimed ones) with the real loader (image decoding and augmentation included).
Images/s counts training images (each goes through the student and the teacher).

Usage:
  python benchmarks/train_throughput.py --steps 10                       # CPU, synthetic
  python benchmarks/train_throughput.py --device cuda --precision bf16-mixed --steps 100 \
      --batch-size 40 --image-size 224 --set model.trainable_stages=null   # GPU, paper sizes
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zsbench.methods.rpkd  # noqa: E402, F401  (registers "rpkd")
from zsbench.config import (
    DATA_PROVIDED,  # noqa: E402
    resolve_config,  # noqa: E402
)
from zsbench.registry import DATASETS, METHODS  # noqa: E402


def _autocast(device: torch.device, precision: str):
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    overrides = [f"trainer.batch_size={args.batch_size}", *args.set]
    if args.image_size:
        overrides.append(f"dataset.image_size={args.image_size}")
    method_cls, dataset_cls = METHODS.get("rpkd"), DATASETS.get(args.dataset)
    cfg = resolve_config(method_cls, dataset_cls, "rpkd", args.dataset, overrides, DATA_PROVIDED)
    dm = dataset_cls(**cfg["dataset"])
    dm.setup()
    dm.batch_size = cfg["trainer"]["batch_size"]
    dm.num_workers = args.num_workers
    torch.manual_seed(0)
    model = method_cls(**cfg["model"], num_classes=dm.num_seen_classes).to(device)
    dm.set_normalization(model.backbone_info.mean, model.backbone_info.std)
    loader = dm.train_dataloader()
    t0 = time.perf_counter()
    model.compute_class_centres(loader)
    centres_s = time.perf_counter() - t0
    opt = model.configure_optimizers()["optimizer"]
    model.train()

    def batches():
        while True:
            yield from loader

    it = batches()
    n_images, timed = 0, 0.0
    for step in range(args.warmup + args.steps):
        batch = next(it)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        images, labels = batch["image"].to(device), batch["label"].to(device)
        with _autocast(device, args.precision):
            loss = model.losses(images, labels)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            timed += time.perf_counter() - start
            n_images += len(labels)
    # the loader's time (decode + augment) is outside `timed`: report both
    t_all = time.perf_counter()
    for _ in range(min(args.steps, 5)):
        next(it)
    load_per_batch = (time.perf_counter() - t_all) / min(args.steps, 5)
    step_s = timed / args.steps
    return {
        "dataset": args.dataset,
        "image_size": dm.image_size,
        "batch_size": dm.batch_size,
        "trainable_stages": cfg["model"]["trainable_stages"],
        "shared_trunk_stages": model.shared_stages,
        "device": str(device),
        "precision": args.precision,
        "torch_threads": torch.get_num_threads(),
        "steps": args.steps,
        "step_s": step_s,
        "images_per_s_compute": n_images / timed,
        "load_s_per_batch": load_per_batch,
        "images_per_s_with_loading": dm.batch_size / (step_s + load_per_batch),
        "class_centres_s": centres_s,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=None, help="default: rpkd.yaml's")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="config override, e.g. model.x=1")
    p.add_argument("--json", default=None, help="write the result here too")
    args = p.parse_args(argv)
    out = run(args)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
