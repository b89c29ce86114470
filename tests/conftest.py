"""Shared fixtures: a private cache and results folder, W&B off, a tiny synthetic dataset."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# A synthetic dataset small enough for a CPU test run in seconds (9 classes, 3 unseen).
TINY = [
    "dataset.n_shapes=3",
    "dataset.n_patterns=3",
    "dataset.photos_per_class=6",
    "dataset.sketches_per_class=6",
    "dataset.render_size=32",
    "dataset.image_size=32",
    "dataset.unseen=[plain_circle,striped_square,dotted_triangle]",
    "trainer.max_epochs=2",
    "trainer.batch_size=16",
]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Every test session gets its own feature/data cache; W&B is off unless a test enables it."""
    cache = tmp_path_factory.mktemp("zsbench-cache")
    old = {k: os.environ.get(k) for k in ("ZSBENCH_CACHE", "WANDB_MODE", "ZSBENCH_RESULTS")}
    os.environ["ZSBENCH_CACHE"] = str(cache)
    os.environ.pop("WANDB_MODE", None)
    os.environ.pop("ZSBENCH_RESULTS", None)
    yield cache
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)


def load_script(path: Path, name: str):
    """The module of a script outside the package (docs/method_pages.py, tests/mutate.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_result(root: Path, method: str, seed: int = 0) -> Path:
    """The one result file of `method` under `root`, whatever its variant (runs with
    overrides sit in `<method>/<variant>/`, see zsbench.identity)."""
    found = [
        p
        for p in Path(root).rglob(f"seed{seed}.json")
        if method in (p.parent.name, p.parent.parent.name) and p.parent.parent.name != "logs"
    ]
    found = [p for p in found if p.parent.name == method or p.parent.parent.name == method]
    assert len(found) == 1, f"expected one {method} seed{seed} result under {root}: {found}"
    return found[0]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def need_system_package(found: bool, what: str, fix: str) -> None:
    """Skip a test whose system package is missing, with the fix; under CI, fail instead (CI
    installs everything through `make install`, so a missing package there is a bug)."""
    if found:
        return
    message = f"{what} not found; {fix} (`make install` does this when root or sudo allows)"
    if in_ci():
        pytest.fail(f"CI is set but {message}")
    pytest.skip(message)


@pytest.fixture
def wordnet_dir() -> Path:
    """The WordNet 3.0 database (Debian wordnet-base + wordnet-sense-index, or $WORDNET_DIR)."""
    folder = Path(os.environ.get("WORDNET_DIR") or "/usr/share/wordnet")
    need_system_package(
        (folder / "data.noun").is_file(),
        f"WordNet 3.0 database in {folder}",
        "apt-get install wordnet-base wordnet-sense-index, or set WORDNET_DIR",
    )
    return folder


@pytest.fixture
def chromium() -> str:
    """A headless-capable Chromium binary (Debian chromium)."""
    import shutil

    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    found = next((shutil.which(n) for n in names if shutil.which(n)), None)
    need_system_package(found is not None, "Chromium on PATH", "apt-get install chromium")
    return found


@pytest.fixture
def shared_data() -> Path:
    data = Path(os.environ.get("ZSBENCH_DATA", SHARED_DATA))
    if not (data / "sketchy21").is_dir():
        pytest.skip(f"real data not found at {data} (set ZSBENCH_DATA to ../shared/data)")
    return data


def pytest_collection_modifyitems(config, items):
    """Under `make mutate`, the fastest tests run first. mutmut runs a mutant's tests from
    mutants/, beside its timing stats, and pytest stops at the first failure (-x): sorted, a
    mutant dies in the cheapest test that sees it rather than after the slow statistical ones
    (the order mutmut passes is a set's). Outside a mutant run the order is untouched."""
    stats = Path("mutmut-stats.json")
    if not os.environ.get("MUTANT_UNDER_TEST") or not stats.is_file():
        return
    seconds = json.loads(stats.read_text()).get("duration_by_test", {})
    items.sort(key=lambda item: seconds.get(item.nodeid, math.inf))
