"""`zsbench submit`: the test-server files of CIRR (test1) and CIRCO (test) from a trained run.

The test labels of both datasets are hidden, so the numbers papers report come from their
servers. A submission is one run's weights scored on the test split: the same config as the
`bench` run on val (same variant), its weights (`seed<N>.weights.pt`, written by
`bench --save-weights`), `--weights FILE`, or the authors' checkpoint (`model.checkpoint=PATH`),
the test queries and gallery embedded exactly as `bench` embeds val, and the files written by
zsbench.cir_submission. On a split with targets (`--split val`) the written files are also
scored offline (`zsbench score-submission`'s code), so they can be checked against the val
result of the same weights.

Files: `<results>/submissions/cir/<dataset>/<split>/<method>[/<variant>]/seed<N>/` holding the
server files and `manifest.json` (what produced them: config, weights, split hash, scores).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from zsbench.errors import ZsbenchError
from zsbench.identity import resolve_identity
from zsbench.registry import DATASETS, METHODS
from zsbench.results import result_path, results_dir, write_json_atomic

__all__ = ["SUBMIT_DATASETS", "SubmitOutcome", "submission_dir", "submit", "submit_main"]

# the datasets whose test split a server scores, and their test split's name
SUBMIT_DATASETS = {"cirr": "test1", "circo": "test"}
_FILES = {"cirr": ("cirr-recall.json", "cirr-recall_subset.json"), "circo": ("circo.json",)}


@dataclasses.dataclass
class SubmitOutcome:
    folder: Path
    files: list[Path]
    manifest: dict


def submission_dir(root: Path, dataset: str, split: str, method: str, seed: int,
                   variant: str) -> Path:  # fmt: skip
    """Where one run's submission files go (the result path's layout, under submissions/)."""
    return result_path(Path(root) / "submissions", "cir", dataset, split, method, seed,
                       variant).with_suffix("")  # fmt: skip


def _split_of(dataset: str, split: str | None) -> str:
    if dataset not in SUBMIT_DATASETS:
        raise ZsbenchError(
            f"zsbench submit writes the test-server files of {' and '.join(SUBMIT_DATASETS)}; "
            f"{dataset!r} has no test server (score it with zsbench bench)."
        )
    split = split or SUBMIT_DATASETS[dataset]
    if dataset == "cirr" and split == "test":
        split = "test1"
    return split


def _reject_split_override(overrides) -> None:
    from zsbench.config import parse_override

    for o in overrides:
        if parse_override(str(o))[:2] == ("dataset", "split"):
            raise ZsbenchError(
                "zsbench submit picks the split itself (the test split, or --split val for the "
                "offline check); drop --set dataset.split and use --split."
            )


def _load_weights(plan_cfg: dict, model, method: str, meta, weights, val_result: Path) -> dict:
    """The trained weights to submit: --weights, model.checkpoint (the authors' weights, loaded
    when the model was built), or the val run's own seed<N>.weights.pt. Returns their record."""
    from zsbench import checkpoints as ck

    if not meta.trains:
        return {"trained": False}
    if weights is None and model.loaded_checkpoint:
        return {"loaded_from": model.loaded_checkpoint, "released": True}
    path = Path(weights) if weights else ck.weights_path(val_result)
    if not path.is_file():
        raise ZsbenchError(
            f"{method} trains, and no weights were given: {path} does not exist. Train and keep "
            f"them with `zsbench bench --method {method} --dataset <dataset> --save-weights` "
            f"(same --set options), give --weights FILE, or the authors' checkpoint with "
            f"--set model.checkpoint=PATH."
        )
    blob = ck.read_weights(path, method)
    ck.load_weights(model, blob, path, plan_cfg["model"])
    return {"loaded_from": str(path), "epochs": blob["epochs"]}


def submit(
    method: str,
    dataset: str,
    seed: int = 0,
    overrides: list[str] | tuple[str, ...] = (),
    results: str | Path | None = None,
    weights: str | Path | None = None,
    split: str | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
) -> SubmitOutcome:
    """Embed the test split of `dataset` (cirr, circo) with `method`'s trained weights and write
    the server files; see the module docstring."""
    from zsbench.cir_submission import (
        circo_submission,
        cirr_submissions,
        score_submission,
        write_submission,
    )
    from zsbench.evaluation import score_rows
    from zsbench.provenance import provenance
    from zsbench.runner.cir import _embed_group
    from zsbench.runner.common import _prepare_run, _seeded_model

    split = _split_of(dataset, split)
    _reject_split_override(overrides)
    method_cls = METHODS.get(method)
    meta = method_cls.metadata
    if meta.task != "cir":
        raise ZsbenchError(f"{method} is a {meta.task} method; zsbench submit is for CIR methods.")
    ident = resolve_identity(method, dataset, overrides)  # the val run's config and variant
    cfg = ident.cfg
    root = results_dir(results)
    val_result = result_path(root, "cir", dataset, str(cfg["dataset"]["split"]), method,
                             int(seed), ident.variant)  # fmt: skip
    folder = Path(out) if out else submission_dir(root, dataset, split, method, seed,
                                                  ident.variant)  # fmt: skip
    files = [folder / name for name in _FILES[dataset]]
    if any(f.exists() for f in files) and not overwrite:
        raise ZsbenchError(
            f"{folder} already holds a submission ({', '.join(f.name for f in files if f.exists())}"
            f"); --overwrite replaces it, or --out DIR writes elsewhere."
        )

    dm = DATASETS.get(dataset)(**{**cfg["dataset"], "split": split})
    dm.hidden_labels_ok = True  # the test split: no targets, that is the point
    dm.setup()
    (group,) = dm.groups
    official_gallery = group.data.gallery_source == "image_info_unlabeled2017.json"
    if dataset == "circo" and not official_gallery and not group.data.has_targets:
        raise ZsbenchError(
            f"CIRCO's server ranks the full 123,403-image COCO unlabeled gallery; this split's "
            f"gallery is {group.data.gallery_source!r} ({len(group.data.gallery)} images), whose "
            f"rankings would be scored against the wrong gallery. Give "
            f"COCO2017_unlabeled/annotations/image_info_unlabeled2017.json (docs/cir.md)."
        )
    tcfg = cfg["trainer"]
    device = _prepare_run(dm, tcfg)
    model = _seeded_model(method_cls, int(seed), **cfg["model"])
    info = model.backbone_info
    dm.set_normalization(info.mean, info.std)
    loaded = _load_weights(cfg, model, method, meta, weights, val_result)
    model.to(device).eval()
    with torch.no_grad():
        q, g = (z.to(device) for z in _embed_group(model, dm, group))
    scores = score_rows(q, g, model.similarity)  # read a block of queries at a time
    if dataset == "cirr":
        subs = dict(zip(files, cirr_submissions(scores, group.data), strict=True))
    else:
        subs = {files[0]: circo_submission(scores, group.data)}
    for path, sub in subs.items():
        write_submission(path, sub)
    scored = None
    if group.data.has_targets:  # val: score the files as the server would (offline)
        merged: dict = {}
        for sub in subs.values():
            merged.update(score_submission(sub, group.data))
        scored = merged
    manifest = {
        "method": method,
        "dataset": dataset,
        "split": split,
        "seed": int(seed),
        "variant": ident.variant,
        "config_diff": ident.diff,
        "config": cfg,
        "weights": loaded,
        "split_manifest": dm.manifest(),
        "files": [f.name for f in files],
        "n_queries": len(q),
        "n_gallery": len(g),
        "scores": scored,
        "provenance": provenance(device),
    }
    write_json_atomic(folder / "manifest.json", json.loads(json.dumps(manifest, default=str)))
    return SubmitOutcome(folder, files, manifest)


def submit_main(args) -> int:
    """`zsbench submit` (zsbench.cli builds its arguments): write the files, print what."""
    from zsbench.config import check_runner_overrides
    from zsbench.registry import check_pair

    check_pair(args.method, args.dataset)
    check_runner_overrides(args.set)
    out = submit(
        args.method,
        args.dataset,
        seed=args.seed,
        overrides=args.set,
        results=args.results_dir,
        weights=args.weights,
        split=args.split,
        out=args.out,
        overwrite=args.overwrite,
    )
    m = out.manifest
    weights = m["weights"].get("loaded_from", "none (the method does not train)")
    print(
        f"{args.method} on {args.dataset} {m['split']}: {m['n_queries']} queries ranked over "
        f"{m['n_gallery']} images; weights: {weights}"
    )
    for f in out.files:
        print(f"Wrote {f}")
    print(f"Wrote {out.folder / 'manifest.json'}")
    if m["scores"]:
        print("scored offline on this split (the server's formulas, %):")
        for k, v in m["scores"].items():
            print(f"  {k:<14} {100 * v:#9.4g}")
    else:
        print("upload the file(s) to the dataset's server: docs/cir.md, 'Test-server submissions'")
    return 0
