"""Registry and config: names agree everywhere, defaults live in signatures, typos fail clearly."""

from __future__ import annotations

import inspect

import pytest

from zsbench.config import (
    DATA_PROVIDED,
    configs_dir,
    init_parameters,
    load_yaml,
    parse_override,
    resolve_config,
)
from zsbench.errors import ZsbenchError
from zsbench.methods.base import MethodMetadata, RetrievalMethod
from zsbench.registry import DATASETS, METHODS, Registry


def test_registry_rejects_duplicates_and_suggests_names():
    reg = Registry("method", "zsbench.methods")
    reg.register("alpha")(type("A", (), {}))
    with pytest.raises(ZsbenchError, match="registered twice"):
        reg.register("alpha")(type("B", (), {}))
    with pytest.raises(ZsbenchError, match="registered twice"):
        reg.register("supervised")(type("C", (), {}))  # an entry point has that name
    with pytest.raises(ZsbenchError, match="Did you mean: supervised"):
        METHODS.get("supervsied")


@pytest.mark.parametrize("registry", [METHODS, DATASETS], ids=["methods", "datasets"])
def test_listing_reads_the_source_and_agrees_with_the_classes(registry):
    """`zsbench methods` / `datasets` read task and description without importing; they must
    say what the imported class says."""
    from zsbench.registry import describe

    for name in registry.names():
        info = registry.info(name)
        cls = registry.get(name)
        task = cls.metadata.task if hasattr(cls, "metadata") else cls.task
        assert (info.task, info.description) == (task, describe(cls)), name
        assert cls.registry_name == name


@pytest.mark.parametrize("name", METHODS.names())
def test_method_name_matches_file_config_and_metadata(name):
    cls = METHODS.get(name)
    # methods/<stem>.py registers <stem> (underscores as hyphens), its variants <stem>-<x>, and
    # plug-ins on another method as <base>+<stem> (e.g. lincir+rtd)
    stem = cls.__module__.removeprefix("zsbench.methods.").replace("_", "-")
    assert cls.__module__.startswith("zsbench.methods.")
    assert name == stem or name.startswith(stem + "-") or name.endswith("+" + stem)
    assert (configs_dir() / "methods" / f"{name}.yaml").exists()
    assert issubclass(cls, RetrievalMethod)
    meta = cls.metadata
    assert isinstance(meta, MethodMetadata)
    assert meta.task in ("sbir", "cir") and meta.inputs in ("features", "images")
    assert meta.paper and meta.backbone
    if meta.inputs == "features":  # the runner extracts features with these
        params = init_parameters(cls)
        assert "backbone" in params and "weights" in params


@pytest.mark.parametrize("name", METHODS.names())
def test_method_yaml_keys_exist_in_signature(name):
    """Every key in configs/methods/<name>.yaml overrides a real default (no dead keys)."""
    dataset = "synthetic-cir" if METHODS.get(name).metadata.task == "cir" else "synthetic"
    cfg = resolve_config(
        METHODS.get(name), DATASETS.get(dataset), name, dataset, data_provided=DATA_PROVIDED
    )
    assert set(cfg) == {"model", "dataset", "trainer", "eval"}
    raw = load_yaml(configs_dir() / "methods" / f"{name}.yaml")
    params = init_parameters(METHODS.get(name))
    for key in raw.get("model") or {}:
        assert key in params and key not in DATA_PROVIDED


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_yaml_exists(name):
    assert (configs_dir() / "datasets" / f"{name}.yaml").exists()


def test_overrides_parse_and_apply():
    assert parse_override("model.lr=0.5") == ("model", "lr", 0.5)
    assert parse_override("dataset.unseen=[a,b]") == ("dataset", "unseen", ["a", "b"])
    assert parse_override("trainer.precision=bf16-mixed")[2] == "bf16-mixed"
    cfg = resolve_config(
        METHODS.get("supervised"),
        DATASETS.get("synthetic"),
        "supervised",
        "synthetic",
        ["model.lr=0.5", "trainer.max_epochs=3"],
        DATA_PROVIDED,
    )
    assert cfg["model"]["lr"] == 0.5 and cfg["trainer"]["max_epochs"] == 3
    # YAML layer applied (supervised.yaml sets batch_size 128), signature default kept elsewhere
    assert cfg["trainer"]["batch_size"] == 128
    default = inspect.signature(METHODS.get("supervised").__init__).parameters["embedding_dim"]
    assert cfg["model"]["embedding_dim"] == default.default


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.lrr=1", "Did you mean: lr"),
        ("modle.lr=1", "Did you mean: model"),
        ("lr=1", "needs a section"),
        ("model.lr", "not of the form"),
        ("model.num_classes=3", "comes from the dataset"),
        ("trainer.max_epoch=1", "Did you mean: max_epochs"),
    ],
)
def test_bad_overrides_fail_with_the_fix(override, message):
    with pytest.raises(ZsbenchError, match=message):
        resolve_config(
            METHODS.get("supervised"),
            DATASETS.get("synthetic"),
            "supervised",
            "synthetic",
            [override],
            DATA_PROVIDED,
        )


def test_presets_apply_after_the_method_yaml_and_before_overrides(tmp_path, monkeypatch):
    (tmp_path / "methods").mkdir()
    (tmp_path / "datasets").mkdir()
    (tmp_path / "methods" / "supervised.yaml").write_text(
        "trainer: {max_epochs: 3}\n"
        "presets:\n  paper:\n    trainer: {max_epochs: 100, batch_size: 7}\n"
        "    dataset: {image_size: 224}\n"
    )
    monkeypatch.setenv("ZSBENCH_CONFIGS", str(tmp_path))
    args = (METHODS.get("supervised"), DATASETS.get("synthetic"), "supervised", "synthetic")
    assert resolve_config(*args, [], DATA_PROVIDED)["trainer"]["max_epochs"] == 3
    cfg = resolve_config(*args, ["preset=paper", "trainer.batch_size=9"], DATA_PROVIDED)
    assert cfg["trainer"]["max_epochs"] == 100 and cfg["dataset"]["image_size"] == 224
    assert cfg["trainer"]["batch_size"] == 9  # --set wins over the preset
    with pytest.raises(ZsbenchError, match="Did you mean: paper"):
        resolve_config(*args, ["preset=papr"], DATA_PROVIDED)


@pytest.mark.parametrize(
    ("method", "steps"),
    [("lincir", 20000), ("lincir+rtd", 2000), ("searle+rtd", 2000), ("pic2word+rtd", 2000)],
)
def test_step_count_recipes_train_by_steps(method, steps):
    """LinCIR's README trains 20,000 steps, RTD's run.sh 2,000: the paper presets end on
    trainer.max_steps (epochs unbounded, the loader cycles), not on one capped epoch."""
    import zsbench.methods.rtd  # noqa: F401  (registers the +rtd variants)
    from zsbench.config import DATA_PROVIDED, resolve_config
    from zsbench.registry import DATASETS, METHODS

    cfg = resolve_config(METHODS.get(method), DATASETS.get("synthetic-cir"), method,
                         "synthetic-cir", ["preset=paper"], DATA_PROVIDED)  # fmt: skip
    t = cfg["trainer"]
    assert (t["max_steps"], t["max_epochs"], t["limit_train_batches"]) == (steps, None, 1.0)


def test_training_by_steps_needs_a_step_count():
    from zsbench.config import DATA_PROVIDED, resolve_config
    from zsbench.registry import DATASETS, METHODS

    args = (METHODS.get("supervised"), DATASETS.get("synthetic"), "supervised", "synthetic")
    with pytest.raises(ZsbenchError, match="max_steps is not set"):
        resolve_config(*args, ["trainer.max_epochs=null"], DATA_PROVIDED)
    with pytest.raises(ZsbenchError, match="max_steps must be >= 1"):
        resolve_config(*args, ["trainer.max_steps=0"], DATA_PROVIDED)
    cfg = resolve_config(*args, ["trainer.max_epochs=null", "trainer.max_steps=5"], DATA_PROVIDED)
    assert cfg["trainer"]["max_epochs"] is None


def test_a_run_that_would_train_nothing_is_refused_before_any_data(tmp_path, tiny):
    from zsbench.runner import bench

    with pytest.raises(ZsbenchError, match="limit_train_batches=0 trains nothing"):
        bench("supervised", "synthetic", 0, [*tiny, "trainer.limit_train_batches=0"], tmp_path)
    with pytest.raises(ZsbenchError, match="max_epochs must be >= 1"):
        bench("supervised", "synthetic", 0, [*tiny, "trainer.max_epochs=-1"], tmp_path)
    assert not list(tmp_path.rglob("seed0.json"))


def test_a_fit_that_took_no_optimizer_step_writes_no_result(tmp_path, tiny, monkeypatch):
    """An empty training loader (e.g. a pairing that finds no pair): Lightning skips fit
    with a warning and zero optimizer steps; zsbench writes no result."""
    from torch.utils.data import DataLoader

    import zsbench.runner.sbir as sbir
    from zsbench.runner import bench

    monkeypatch.setattr(sbir, "train_loader", lambda dm, model, cfg: DataLoader([]))
    with pytest.raises(ZsbenchError, match="took no optimizer step"):
        bench("supervised", "synthetic", 0, tiny, tmp_path, progress=False)
    assert not list(tmp_path.rglob("seed0.json"))


def test_an_untrained_evaluation_on_purpose_is_recorded_and_ranked_apart(tmp_path, tiny):
    import pandas as pd

    from zsbench.runner import bench

    untrained = bench("supervised", "synthetic", 0, [*tiny, "eval.untrained=true"], tmp_path,
                      progress=False).record  # fmt: skip
    trained = bench("supervised", "synthetic", 0, tiny, tmp_path, progress=False).record
    assert (untrained["status"], trained["status"]) == ("untrained", "ok")
    assert untrained["variant"] != trained["variant"]  # its own result file
    assert untrained["timings"]["train_s"] < trained["timings"]["train_s"]
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    rows = board.set_index("method")["mAP@all"]
    assert set(rows.index) == {"supervised", "supervised [untrained]"}
    assert rows["supervised"] == pytest.approx(trained["metrics"]["mAP@all"])
    assert rows["supervised [untrained]"] == pytest.approx(untrained["metrics"]["mAP@all"])
    with pytest.raises(ZsbenchError, match="frozen does not train"):
        bench("frozen", "synthetic", 0, [*tiny, "eval.untrained=true"], tmp_path)
