"""Why does `sem-pcyc-binary` score above `sem-pcyc`? One trained SEM-PCYC, scored in every
space between the real-valued embedding and its 64-bit ITQ codes.

`sem-pcyc-binary` trains exactly the `sem-pcyc` model (same seed, same generators) and then
hashes its semantic-space embeddings: centre sketches and photos each by their own
seen-class training mean, project on the top-64 principal components, rotate (ITQ), take the
sign. This script trains it once per seed and scores the unseen-class embeddings after each
of those steps (docs/methods/sem-pcyc.md reads the table):

  raw          the sem-pcyc embedding (Euclidean: what `sem-pcyc` reports; cosine)
  centred      minus the per-domain training mean (Euclidean; cosine)
  pca64        centred, on the top-64 principal components, ITQ-rotated but not signed
               (a rotation: the same distances as the PCA step alone)
  sign128      sign of the centred embedding (128 bits, no PCA, no ITQ)
  binary       the ITQ codes `sem-pcyc-binary` ranks, Hamming distance, under each tie rule
  real BN     the same generators with their BatchNorm statistics re-estimated on the real
               seen-class training features only (training also feeds them generated inputs)
  test-centred raw minus each test domain's own mean (the official itq.py centring: it uses
               the unseen test data, so zsbench never reports it; shown for comparison)

Usage:
  ZSBENCH_DATA=../shared/data python benchmarks/sem_pcyc_real_vs_binary.py \
      --dataset sketchy21-mini --seeds 0 1 2 [--set dataset.split_seed=1]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zsbench.evaluation import evaluate_sbir  # noqa: E402
from zsbench.runner import plan_run, train_sbir  # noqa: E402


@torch.no_grad()
def embeddings(model, loader, generator) -> tuple[torch.Tensor, torch.Tensor]:
    z, y = [], []
    for batch in loader:
        z.append(generator(batch["feature"].float()))
        y.append(batch["label"])
    return torch.cat(z), torch.cat(y)


def variants(model, dm) -> dict[str, tuple]:
    """name -> (query, gallery, similarity) for every scored space."""
    model.eval()
    q, ql = embeddings(model, dm.query_dataloader(), model.gen_sk2se)
    g, gl = embeddings(model, dm.gallery_dataloader(), model.gen_im2se)
    # what `model.bn_from_real=true` does after training, on a copy of the trained model
    refit = copy.deepcopy(model)
    refit.refit_batchnorm(dm.train_dataloader())
    refit.eval()
    qb, _ = embeddings(refit, dm.query_dataloader(), refit.gen_sk2se)
    gb, _ = embeddings(refit, dm.gallery_dataloader(), refit.gen_im2se)
    mean_q, mean_g = model.itq_mean[0], model.itq_mean[1]
    qc, gc = q - mean_q, g - mean_g
    proj = model.itq_projection
    return {
        "labels": (ql, gl),
        "raw, euclidean (= sem-pcyc)": (q, g, "euclidean"),
        "raw, cosine": (q, g, "cosine"),
        "centred, euclidean": (qc, gc, "euclidean"),
        "centred, cosine": (qc, gc, "cosine"),
        "pca64 (+ ITQ rotation, no sign), euclidean": (qc @ proj, gc @ proj, "euclidean"),
        "sign128 of centred, hamming": (torch.sign(qc), torch.sign(gc), "dot"),
        "binary 64-bit ITQ (= sem-pcyc-binary)": (model.hash(q, 0), model.hash(g, 1), "dot"),
        "BN statistics from real training features only, euclidean": (qb, gb, "euclidean"),
        "BN statistics from real training features only, cosine": (qb, gb, "cosine"),
        "test-centred, euclidean (transductive)": (
            q - q.mean(0),
            g - g.mean(0),
            "euclidean",
        ),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="sketchy21-mini")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = ap.parse_args()

    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            plan = plan_run("sem-pcyc-binary", args.dataset, seed, args.set, results=tmp)
            run = train_sbir(plan, "sem-pcyc-binary", args.dataset, seed, progress=False)
            spaces = variants(run.model, plan.dm)
            ql, gl = spaces.pop("labels")
            for name, (q, g, sim) in spaces.items():
                rules = ("expected", "pessimistic") if name.startswith("binary") else ("expected",)
                for ties in rules:
                    d = evaluate_sbir(q, ql, g, gl, similarity=sim, ties=ties)
                    p = evaluate_sbir(q, ql, g, gl, spec="sem-pcyc", similarity=sim, ties=ties)
                    label = name if len(rules) == 1 else f"{name}, ties={ties}"
                    rows.setdefault(label, []).append(
                        {
                            "mAP@all": d["metrics"]["mAP@all"],
                            "P@100": d["metrics"]["P@100"],
                            "sem-pcyc mAP@200": p["metrics"]["mAP@200"],
                            "sem-pcyc P@100": p["metrics"]["P@100"],
                            "tie_fraction": d["tie_fraction"],
                        }
                    )
            print(f"seed {seed} done", file=sys.stderr)

    keys = ["mAP@all", "P@100", "sem-pcyc mAP@200", "sem-pcyc P@100", "tie_fraction"]
    print(f"dataset {args.dataset}, seeds {args.seeds}, overrides {args.set}: mean (std)")
    print("| space | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for label, vals in rows.items():
        cells = []
        for k in keys:
            v = np.array([r[k] for r in vals])
            cells.append(f"{v.mean():.3f}" + (f" ({v.std(ddof=1):.3f})" if len(v) > 1 else ""))
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
