"""Why CVAE learns slowly on small backbone features: seen-class validation curves with the raw
features (as the official code feeds VGG16 fc7) and with the features at unit RMS
(`feature_rms=1.0`, the zsbench default).

The CVAE loss is 1 * (MSE(photo_hat, photo) + KL) + 10 * MSE(sketch_hat, sketch), and the
decoder's input is [z ~ N(0, I) (1024-d, norm 32), sketch]. The MSE terms scale with the square
of the features, the KL and z do not: EfficientNet-Lite0's pooled features have an RMS of
about 0.38, so the KL dominates and z drowns the sketch. The script trains CVAE directly on the
cached features of the seen-class training pairs (the same networks, losses and optimiser as
`zsbench bench --method cvae`), and every `--every` steps scores the generated validation
sketches (100 z draws, as the method retrieves) against the validation photos, both of the seen
classes only. It prints the curves, the frozen features' validation mAP, the constant-mean
photo's reconstruction error (a decoder below it has learnt less than the mean), and a
closed-form ridge regression sketch -> photo on the same pairs (what a linear map reaches).

Usage:
  ZSBENCH_DATA=../shared/data python benchmarks/cvae_feature_scale.py \
      --dataset sketchy-mini --steps 1200 --every 100 [--seed 0] [--set dataset.split_seed=1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zsbench.datamodules.base import PairDataset  # noqa: E402
from zsbench.evaluation import evaluate_sbir  # noqa: E402
from zsbench.features import cached_features  # noqa: E402
from zsbench.runner import plan_run  # noqa: E402


def _map(q, ql, g, gl) -> float:
    return float(evaluate_sbir(q, ql, g, gl, similarity="cosine")["metrics"]["mAP@all"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="sketchy-mini")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rms", type=float, nargs="+", default=[0.0, 1.0], help="0 = raw features")
    ap.add_argument("--set", action="append", default=[], help="dataset overrides")
    args = ap.parse_args()

    from zsbench.methods.cvae import CVAE

    with torch.random.fork_rng():
        plan = plan_run("cvae", args.dataset, args.seed, args.set, results="/tmp/unused")
    dm = plan.dm
    feats, _, _ = cached_features(dm, "efficientnet_lite0", "default", progress=False)
    F = torch.tensor(np.asarray(feats), dtype=torch.float32)
    pairs = PairDataset(dm, dm.partitions["train"], "instance")
    sk_i = [i for i in pairs.sketches if i in pairs.partner]
    S, P = F[sk_i], F[[pairs.partner[i] for i in sk_i]]

    def part(dom):
        idx = [i for i in dm.partitions["val"] if dm.items[i].domain == dom]
        return F[idx], torch.as_tensor(dm.label_ids[idx])

    (q, ql), (g, gl) = part(0), part(1)
    A, B = (S - S.mean(0)).double(), (P - P.mean(0)).double()
    W = torch.linalg.solve(A.T @ A + 10 * torch.eye(A.shape[1], dtype=A.dtype), A.T @ B)
    ridge = ((q.double() - S.mean(0)) @ W + P.mean(0)).float()
    rms = float(torch.cat([S, P]).square().mean().sqrt())
    print(f"{args.dataset}: {len(S)} training pairs, {len(q)} / {len(g)} validation sketches / "
          f"photos (seen classes), feature RMS {rms:.3f}")  # fmt: skip
    print(f"frozen features: val mAP@all {_map(q, ql, g, gl):.4f}")
    print(f"ridge sketch->photo (lambda 10): val mAP@all {_map(ridge, ql, g, gl):.4f}")
    print(f"constant mean photo: reconstruction MSE {float(P.var(0, unbiased=False).mean()):.4f}")

    curves = {}
    for target in args.rms:
        scale = 1.0 if target == 0 else target / rms
        torch.manual_seed(args.seed)
        model = CVAE(feature_dim=F.shape[1])
        opt = model.configure_optimizers()
        order = torch.Generator().manual_seed(args.seed)
        s_, p_, qs, gs = S * scale, P * scale, q * scale, g * scale
        label, points, step, t0 = ("raw" if target == 0 else f"rms {target:g}"), [], 0, time.time()
        while step < args.steps:
            for b in torch.randperm(len(S), generator=order).split(128):
                model.train()
                opt.zero_grad()
                terms = model.losses(s_[b], p_[b])
                terms["loss"].backward()
                opt.step()
                step += 1
                if step % args.every == 0:
                    model.eval()
                    with torch.random.fork_rng():
                        torch.manual_seed(0)
                        gen = model.generator.generate_mean(qs, model.hparams.n_samples)
                    recon = float(terms["recon"].detach()) / scale**2  # raw-feature units
                    points.append((step, _map(gen, ql, gs, gl), recon))
                    took = time.time() - t0
                    print(f"  {label:>7} step {step:5d}: val mAP@all {points[-1][1]:.4f}, "
                          f"recon MSE {recon:.4f} ({took:.0f} s)", flush=True)  # fmt: skip
                if step >= args.steps:
                    break
        curves[label] = points
    print("\n| steps | " + " | ".join(curves) + " |")
    print("|---:|" + "---:|" * len(curves))
    for i, (step, *_) in enumerate(next(iter(curves.values()))):
        print(f"| {step} | " + " | ".join(f"{c[i][1]:.3f}" for c in curves.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
