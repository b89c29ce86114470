"""The architecture holds: imports run one way (the core never imports a plug-in), no import
cycles, plug-ins are found by entry points (a third-party package adds a method without
touching zsbench), and light commands import nothing heavy."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import one_result

from zsbench.results import SCHEMA_VERSION, result_path, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
# source folder -> installed package (pyproject's package-dir mapping)
PACKAGES = {
    "zsbench": "zsbench",
    "methods": "zsbench.methods",
    "datamodules": "zsbench.datamodules",
}
PLUGINS = ("zsbench.methods", "zsbench.datamodules")
HEAVY = ("lightning", "transformers", "wandb", "timm")


def project_modules() -> dict[str, Path]:
    mods = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts]
            parts = [p for p in parts if p != "__init__"]
            mods[".".join([package, *parts])] = path
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> project modules it imports (anywhere in the file, lazy imports included)."""
    mods = project_modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in mods else node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def test_core_never_imports_a_plugin():
    graph = import_graph()
    bad = [
        (a, b)
        for a, deps in graph.items()
        for b in deps
        if not a.startswith(PLUGINS) and b.startswith(PLUGINS)
    ]
    assert not bad, f"core modules import plug-ins (move what they need into the core): {bad}"
    # and the plug-in folders are imported under their installed names only
    for path in [*ROOT.glob("zsbench/**/*.py"), *ROOT.glob("methods/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for n in names:
                assert n.split(".")[0] not in ("methods", "datamodules"), (path, n)


def test_every_package_folder_is_installed():
    """pyproject lists packages explicitly (methods/ and datamodules/ are mapped under
    zsbench): a new sub-package missing there works in the checkout and breaks installs."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(project["packages"])
    for folder, package in PACKAGES.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            assert ".".join([package, *parts]) in listed, init
    assert project["package-dir"] == {
        "zsbench": "zsbench",
        **{p: f for f, p in PACKAGES.items() if f != "zsbench"},
        "zsbench.configs": "configs",
    }


def method_modules() -> set[str]:
    """Modules that hold a registered method (pyproject's zsbench.methods entry points)."""
    import tomllib

    points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    return {target.split(":")[0] for target in points["zsbench.methods"].values()}


def test_no_method_imports_another_methods_file():
    """What several methods share lives in a shared module of methods/ (base, blocks,
    pseudo_word, sketch_conditioned), so that breaking one method's file breaks only it."""
    graph, methods = import_graph(), method_modules()
    bad = sorted((a, b) for a in methods for b in graph[a] if b in methods)
    assert not bad, f"move what these share into methods/blocks.py or a family base: {bad}"
    shared = {m for m in project_modules() if m.startswith("zsbench.methods.")} - methods
    assert {"zsbench.methods.blocks", "zsbench.methods.pseudo_word"} <= shared
    # a shared module is used by two methods at least; otherwise it belongs in that method
    users = {m: {a for a in methods if m in graph[a]} for m in shared - {"zsbench.methods"}}
    lonely = {m: sorted(u) for m, u in users.items() if len(u) < 2}
    assert not lonely, f"shared modules with fewer than two method users: {lonely}"


def test_method_bases_own_the_scaffolding():
    """What every method of a family needs is declared once, in methods/base.py: the cached
    features' `backbone` / `weights` (FeatureMethod), the feature heads' data-provided sizes,
    `semantics` and `pairing` (FeatureSpaceMethod, restated only for another default), and
    the seen-class validation hooks (SBIRMethod): no method re-types the same code."""
    import inspect

    from zsbench.methods.base import (
        CIRMethod,
        FeatureMethod,
        FeatureSpaceMethod,
        ImageMethod,
        SBIRMethod,
    )
    from zsbench.registry import METHODS

    for name in METHODS.names():
        cls = METHODS.get(name)
        task, inputs = cls.metadata.task, cls.metadata.inputs
        assert issubclass(cls, SBIRMethod if task == "sbir" else CIRMethod), name
        if inputs == "features":
            assert issubclass(cls, FeatureMethod), f"{name}: a features method subclasses it"
        if task == "sbir" and inputs == "images" and cls.metadata.trains:
            assert issubclass(cls, ImageMethod), f"{name}: an image-trained method subclasses it"
        for klass in cls.__mro__:
            module = klass.__module__
            if not module.startswith("zsbench.methods.") or module == "zsbench.methods.base":
                continue  # the bases, Lightning's and torch's classes
            # modes and embedding are the bases': a method lists its frozen modules and
            # backbones, and embeds one batch (predict_step), never a loop of its own
            for hook in ("train", "embed"):
                assert hook not in vars(klass), f"{klass.__name__}.{hook} is the base's"
            if "__init__" not in vars(klass):
                continue
            own = inspect.signature(vars(klass)["__init__"]).parameters
            if issubclass(klass, FeatureMethod):
                assert not {"backbone", "weights"} & set(own), f"{klass.__name__} restates them"
            if issubclass(klass, FeatureSpaceMethod):
                base = inspect.signature(FeatureSpaceMethod.__init__).parameters
                same = [
                    p
                    for p in own
                    if p in base
                    and p not in ("self", "kwargs")
                    and own[p].default == base[p].default
                ]
                assert not same, f"{klass.__name__} restates FeatureSpaceMethod's {same}"
            # an epoch-end hook that only logs val/mAP is SBIRMethod's own
            hook = vars(klass).get("on_validation_epoch_end")
            if hook is not None:
                body = [ln.split("#")[0].strip() for ln in inspect.getsource(hook).splitlines()[1:]]
                assert [ln for ln in body if ln] != ["self.log_validation_map()"], (
                    f"{klass.__name__}.on_validation_epoch_end is SBIRMethod's default"
                )


def test_image_methods_share_the_backbone_scaffolding():
    """No method file freezes stages, BatchNorms or builds optimizer groups by hand: the
    calls are ImageMethod's (methods/base.py) and create_backbone's."""
    for path in sorted((ROOT / "methods").glob("*.py")):
        if path.name == "base.py":
            continue
        text = path.read_text()
        for name in ("set_trainable_stages", "keep_frozen_batchnorm_in_eval"):
            assert name not in text, f"{path.name} calls {name}"


def test_one_run_lifecycle():
    """Both tasks run through runner.common.run_task: the result record is built and published
    there only; a task supplies its train and score steps (runner.sbir.SBIR, runner.cir.CIR)."""
    from zsbench.runner import cir, sbir
    from zsbench.runner.common import Task

    calls: dict[str, list[str]] = {"build_record": [], "publish": []}
    for path in sorted((ROOT / "zsbench" / "runner").glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) in calls:
                    calls[node.func.id].append(f"{path.name}:{fn.name}")
    assert calls == {"build_record": ["common.py:run_task"], "publish": ["common.py:run_task"]}
    assert isinstance(sbir.SBIR, Task) and isinstance(cir.CIR, Task)


def test_no_import_cycles():
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def _python(code: str, env: dict | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd or ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _cli_run(argv: list[str], env: dict | None = None) -> tuple[int | None, str, set[str]]:
    """(exit status, stdout and stderr, top-level modules loaded) of `zsbench <argv>` run in a
    fresh interpreter."""
    out = _python(
        f"""
        import json, sys
        from zsbench.cli import main
        sys.stderr = sys.stdout
        try:
            rc = main({argv!r})
        except SystemExit as exc:
            rc = exc.code
        print("RC=" + json.dumps(rc))
        print("MODULES=" + json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
        """,
        env,
    )
    head, _, modules = out.rpartition("MODULES=")
    text, _, rc = head.rpartition("RC=")
    return json.loads(rc), text, set(json.loads(modules))


def _modules_after(argv: list[str], env: dict | None = None) -> set[str]:
    return _cli_run(argv, env)[2]


@pytest.mark.parametrize("argv", [["--help"], ["methods"], ["datasets"]])
def test_listing_commands_import_neither_torch_nor_plugins(argv):
    loaded = _modules_after(argv)
    assert not loaded & {"torch", "numpy", "pandas", *HEAVY}, sorted(loaded)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "rpdk"], "Unknown method 'rpdk'. Did you mean: rpkd?"),
        (["--method", "rpkd", "--dataset", "circo"], "is a sbir method but dataset 'circo'"),
    ],
)
def test_bench_rejects_bad_names_before_importing_torch(argv, message):
    """A typo in `zsbench bench` is answered at once: no torch, no lightning loaded."""
    rc, out, loaded = _cli_run(["bench", *argv])
    assert rc == 2 and message in out, (rc, out)
    assert not loaded & {"torch", *HEAVY}, sorted(loaded & {"torch", *HEAVY})


@pytest.mark.parametrize("command", ["leaderboard", "report"])
def test_table_commands_import_no_torch(command, tmp_path):
    """The leaderboard and the report are pandas over JSON files: no torch (about 2.5 s)."""
    root = tmp_path / "results"
    write_json_atomic(
        result_path(root, "sbir", "synthetic", "default", "frozen", 0),
        {
            "schema_version": SCHEMA_VERSION,
            "task": "sbir",
            "dataset": "synthetic",
            "split": "default",
            "method": "frozen",
            "seed": 0,
            "status": "ok",
            "metrics": {"mAP@all": 0.5},
            "spec": {"name": "default", "version": "1.0"},
        },
    )
    loaded = _modules_after([command, "--results-dir", str(root)])
    assert not loaded & {"torch", *HEAVY}, sorted(loaded & {"torch", *HEAVY})
    assert (root / ("leaderboard.csv" if command == "leaderboard" else "report.html")).exists()
    if command == "leaderboard":  # the older metric version is still labelled
        assert "default v1.0" in (root / "leaderboard.csv").read_text()


def test_compute_commands_import_nothing_heavy(tmp_path, shared_data):
    import numpy as np

    rng = np.random.default_rng(0)
    files = {}
    for name, shape in (("q", (20, 8)), ("g", (50, 8))):
        np.save(tmp_path / f"{name}.npy", rng.normal(size=shape).astype(np.float32))
        np.save(tmp_path / f"{name}l.npy", rng.integers(0, 3, shape[0]))
        files[name] = str(tmp_path / f"{name}.npy")
        files[name + "l"] = str(tmp_path / f"{name}l.npy")
    evaluate = ["evaluate", "--query-features", files["q"], "--query-labels", files["ql"]]
    evaluate += ["--gallery-features", files["g"], "--gallery-labels", files["gl"]]
    submission = tmp_path / "s.json"
    submission.write_text(json.dumps({}))
    for argv in (
        evaluate,
        ["leaderboard", "--results-dir", str(tmp_path / "results")],
        ["score-submission", "--dataset", "circo", "--predictions", str(submission)],
    ):
        loaded = _modules_after(argv, {"ZSBENCH_DATA": str(shared_data)})
        assert not loaded & set(HEAVY), (argv[0], sorted(loaded & set(HEAVY)))


THIRD_PARTY = '''
"""A method from another package: a frozen backbone under a new name."""

from zsbench.methods.frozen import Frozen


class TinyThird(Frozen):
    """Third-party test method: the frozen baseline, declared by an entry point."""
'''


@pytest.mark.slow
def test_a_third_party_method_is_found_by_its_entry_point(tmp_path, tiny):
    """A package outside this repository declares `zsbench.methods` in its metadata; zsbench
    lists it, runs it and writes its result with no change to zsbench."""
    site = tmp_path / "site"
    dist = site / "tinythird-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "tinythird.py").write_text(THIRD_PARTY)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tinythird\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[zsbench.methods]\ntiny-third = tinythird:TinyThird\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    listing = subprocess.run(
        [sys.executable, "-m", "zsbench.cli", "methods"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=tmp_path,
        timeout=600,
    )
    assert listing.returncode == 0, listing.stderr
    assert "tiny-third" in listing.stdout and "Third-party test method" in listing.stdout
    results = tmp_path / "results"
    args = ["bench", "--method", "tiny-third", "--results-dir", str(results), "--no-progress"]
    for o in tiny:
        args += ["--set", o]
    done = subprocess.run(
        [sys.executable, "-m", "zsbench.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(one_result(results, "tiny-third").read_text())
    assert record["method"] == "tiny-third" and record["metrics"]["mAP@all"] > 0
