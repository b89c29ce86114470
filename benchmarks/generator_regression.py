"""Does a sketch-conditioned generator (CVAE, CAAE) regress to the mean photo? Measured on the
weights of a finished `zsbench bench --save-weights` run.

A generator that has learnt little of the sketch outputs nearly the same vector for every
query: the mean seen-class photo feature. Cosine retrieval with such vectors ranks the gallery
by how typical a photo is, not by the query's class, and lands below the frozen features. The
script embeds each set the way the method retrieves (a sketch: the mean decoder output over the
method's z draws; a photo: its backbone feature) and prints, per set of sketches:

- `cos(mean generated, mean train photo)`: the cosine of the mean generated vector to the mean
  seen-class *training* photo feature (1 = the generator's average output is that mean);
- `class means, mean pairwise cos`: the mean cosine between the class means of the generated
  vectors of different classes, beside the same for the photos and for the input sketches of
  those classes (near 1 = the classes collapse onto one vector; photos are far apart), and
  the same after subtracting the mean training photo (what is left beside the mean);
- `to own class photos - to others`: the mean cosine of a generated vector to its own class's
  photo mean minus that to the other classes' (what retrieval can use);
- `mAP@all`: of the generated vectors against those photos (the retrieval it predicts).

Sets: the seen-class validation sketches (against the seen validation photos) and the unseen
test queries (against the gallery). Nothing is trained or tuned here; the unseen numbers
describe a finished run, as its result does.

Usage:
  ZSBENCH_DATA=../shared/data zsbench bench --method cvae --dataset sketchy-mini --save-weights
  ZSBENCH_DATA=../shared/data python benchmarks/generator_regression.py --method cvae \
      --dataset sketchy-mini [--seed 0] [--results-dir results] [--set model.KEY=VALUE ...]
(the same --method/--dataset/--seed/--set as the bench run: they find its weights file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zsbench.datamodules.base import PHOTO, SKETCH  # noqa: E402
from zsbench.evaluation import evaluate_sbir  # noqa: E402
from zsbench.runner import plan_run  # noqa: E402
from zsbench.runner.sbir import train_sbir  # noqa: E402


def class_means(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    classes = torch.unique(y)
    return torch.stack([x[y == c].mean(0) for c in classes]), classes


def mean_pairwise_cos(means: torch.Tensor) -> float:
    m = F.normalize(means, dim=1)
    c = m @ m.T
    n = len(m)
    return float((c.sum() - c.diagonal().sum()) / (n * (n - 1)))


def own_minus_others(gen: torch.Tensor, y: torch.Tensor, photo_means, classes) -> float:
    sims = F.normalize(gen, dim=1) @ F.normalize(photo_means, dim=1).T
    own = (y[:, None] == classes[None, :]).float()
    return float(((sims * own).sum(1) - (sims * (1 - own)).sum(1) / (len(classes) - 1)).mean())


def describe(name: str, gen, gl, sk, photos, pl, train_mean) -> dict:
    pm, classes = class_means(photos, pl)
    row = {
        "set": name,
        "n_sketches": len(gen),
        "cos(mean generated, mean train photo)": float(
            F.cosine_similarity(gen.mean(0), train_mean, dim=0)
        ),
        "class means, mean pairwise cos: generated": mean_pairwise_cos(class_means(gen, gl)[0]),
        "class means, mean pairwise cos: photos": mean_pairwise_cos(pm),
        "class means, mean pairwise cos: input sketches": mean_pairwise_cos(class_means(sk, gl)[0]),
        "  the same, centred by the mean train photo: generated": mean_pairwise_cos(
            class_means(gen - train_mean, gl)[0]
        ),
        "  the same, centred by the mean train photo: photos": mean_pairwise_cos(pm - train_mean),
        "to own class photos - to others": own_minus_others(gen, gl, pm, classes),
        "mAP@all": float(
            evaluate_sbir(gen, gl, photos, pl, similarity="cosine")["metrics"]["mAP@all"]
        ),
    }
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="cvae", help="cvae or caae")
    ap.add_argument("--dataset", default="sketchy-mini")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results-dir", default=None)
    ap.add_argument("--weights", default=None, help="a seed<N>.weights.pt (default: the run's)")
    ap.add_argument("--set", action="append", default=[], help="the bench run's overrides")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args()

    plan = plan_run(args.method, args.dataset, args.seed, args.set, results=args.results_dir)
    plan = dataclasses.replace(plan, eval_only=True, weights=args.weights)
    model = train_sbir(plan, args.method, args.dataset, args.seed, progress=False).model
    if not hasattr(model, "generator"):
        raise SystemExit(f"{args.method} is not a sketch-conditioned generator (cvae, caae)")
    model.eval()
    dm = plan.dm

    def embed(part_indices, domain: int, side: str):
        idx = np.array([i for i in part_indices if dm.items[i].domain == domain])
        return model.embed(dm.subset_dataloader(idx), side)

    train_photos, _ = embed(dm.partitions["train"], PHOTO, "gallery")
    train_mean = train_photos.mean(0)
    rows = []
    for name, part_q, part_g in (
        ("seen validation", dm.partitions["val"], dm.partitions["val"]),
        ("unseen test", dm.partitions["query"], dm.partitions["gallery"]),
    ):
        if not len(part_q):
            continue
        gen, gl = embed(part_q, SKETCH, "query")
        photos, pl = embed(part_g, PHOTO, "gallery")
        sketches = embed(part_q, SKETCH, "gallery")[0]  # the input sketches, as photos are embedded
        rows.append(describe(name, gen, gl, sketches, photos, pl, train_mean))

    print(f"{args.method} on {args.dataset}, seed {args.seed} ({plan.path})")
    width = max(len(k) for k in rows[0])
    for key in rows[0]:
        cells = "".join(f"{r[key]:>18.3f}" if isinstance(r[key], float) else f"{r[key]:>18}"
                        for r in rows)  # fmt: skip
        print(f"{key:<{width}}{cells}")
    if args.json:
        Path(args.json).write_text(json.dumps({"result": str(plan.path), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
