"""Config values are checked against the annotation and range of the key they set, before any
data is touched; the error names the key, the value, what was expected and where it came from."""

from __future__ import annotations

import pytest

from zsbench.config import DATA_PROVIDED, resolve_config
from zsbench.errors import ZsbenchError
from zsbench.registry import DATASETS, METHODS


def resolve(method: str, *overrides: str, dataset: str = "synthetic"):
    return resolve_config(
        METHODS.get(method), DATASETS.get(dataset), method, dataset, list(overrides), DATA_PROVIDED
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=abc", r"--set trainer.max_epochs=abc: trainer.max_epochs must be int"),
        ("trainer.max_epochs=2.5", r"trainer.max_epochs must be int \| None, got 2.5"),
        ("trainer.max_epochs=true", r"trainer.max_epochs must be int \| None, got True"),
        ("trainer.max_epochs=0", r"trainer.max_epochs must be >= 1, got 0"),
        ("trainer.batch_size=-4", r"trainer.batch_size must be >= 1"),
        ("trainer.fast_dev_run=maybe", r"trainer.fast_dev_run must be bool"),
        ("model.lr=abc", r"--set model.lr=abc: model.lr must be float, got 'abc' \(str\)"),
        ("model.lr=0", r"model.lr must be > 0, got 0"),
        ("dataset.val_fraction=1.5", r"dataset.val_fraction must be >= 0 and < 1"),
        ("eval.spec=7", r"eval.spec must be str"),
    ],
)
def test_a_bad_value_names_the_key_the_value_and_the_expected_type(override, message):
    with pytest.raises(ZsbenchError, match=message):
        resolve("supervised", override)


def test_good_values_pass_and_keep_their_type():
    cfg = resolve(
        "supervised",
        "model.lr=1",  # an int where a float is expected
        "trainer.precision=16",  # Lightning takes ints and strings
        "trainer.precision=bf16-mixed",
        "trainer.gradient_clip_val=null",  # optional
        "trainer.limit_train_batches=3",
        "eval.chunk_size=null",
    )
    assert cfg["model"]["lr"] == 1 and cfg["trainer"]["precision"] == "bf16-mixed"
    assert cfg["trainer"]["gradient_clip_val"] is None


def test_a_bad_value_in_a_yaml_file_names_the_file(tmp_path, monkeypatch):
    (tmp_path / "methods").mkdir(parents=True)
    (tmp_path / "datasets").mkdir()
    (tmp_path / "methods" / "supervised.yaml").write_text("trainer: {max_epochs: ten}\n")
    monkeypatch.setenv("ZSBENCH_CONFIGS", str(tmp_path))
    with pytest.raises(ZsbenchError, match=r"supervised\.yaml: trainer\.max_epochs must be int"):
        resolve("supervised")


def test_every_shipped_config_and_preset_passes_the_checks():
    """The repository's own YAML (configs/) follows the annotations of every method and
    dataset it is combined with: methods x datasets of the same task, each preset."""
    from zsbench.config import configs_dir, load_yaml

    checked = 0
    for m in METHODS.names():
        presets = load_yaml(configs_dir() / "methods" / f"{m}.yaml").get("presets") or {}
        for d in DATASETS.names():
            for preset in [None, *presets]:
                try:
                    resolve(m, *([f"preset={preset}"] if preset else []), dataset=d)
                except ZsbenchError as err:
                    if "unknown key" in str(err):  # an SBIR method on a CIR dataset and so on
                        continue
                    raise
                checked += 1
    assert checked > 40


def test_a_bad_trainer_value_fails_before_torch_loads():
    """`zsbench bench --set trainer.max_epochs=abc` answers at once: the trainer and eval
    sections are checked against the runner's dataclasses before any method is imported."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from zsbench.cli import main\n"
        "rc = main(['bench', '--method', 'supervised', '--dataset', 'synthetic',\n"
        "           '--set', 'trainer.max_epochs=abc'])\n"
        "print('rc', rc, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "rc 2 False" in out.stdout, out.stdout + out.stderr
    assert "trainer.max_epochs must be int | None, got 'abc'" in out.stderr
