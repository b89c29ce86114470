"""`zsbench submit` on the real CIRR and CIRCO annotation files (../shared/data/cir): the files
it writes for a split with targets score exactly like `zsbench bench` scores the same weights
there, and the test-split files have the servers' shape. The images are random noise written
under each annotation's own path (the real images are not shipped); the model is Pic2Word on
the random tiny CLIP, with weights in the official checkpoint layout or from bench."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zsbench.cir_readers import read_circo, read_cirr
from zsbench.cir_submission import read_submission, score_submission
from zsbench.cli import main
from zsbench.errors import ZsbenchError
from zsbench.identity import resolve_identity
from zsbench.registry import METHODS
from zsbench.runner import bench
from zsbench.runner.submit import submit

pytestmark = pytest.mark.needs_data

TINY = ["model.clip=tiny", "dataset.image_size=16", "trainer.eval_batch_size=512"]


def _noise_images(root: Path, rel_paths, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for rel in rel_paths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


def _official_pic2word(path: Path, dataset: str) -> Path:
    """A tiny Pic2Word phi saved as the official code saves it: {'state_dict_img2text':
    {'module.<key>': tensor}} (DDP-wrapped), with random weights."""
    cfg = resolve_identity("pic2word", dataset, TINY).cfg
    torch.manual_seed(1)
    phi = METHODS.get("pic2word")(**cfg["model"]).phi
    state = {f"module.{k}": v for k, v in phi.state_dict().items()}
    torch.save({"epoch": 30, "state_dict_img2text": state}, path)
    return path


@pytest.fixture(scope="module")
def circo_root(tmp_path_factory):
    from conftest import SHARED_DATA

    ann = Path(SHARED_DATA) / "cir" / "circo" / "annotations"
    if not ann.is_dir():
        pytest.skip(f"CIRCO annotations not found at {ann}")
    root = tmp_path_factory.mktemp("circo")
    shutil.copytree(ann, root / "annotations")
    paths = set()
    for split in ("val", "test"):
        s = read_circo(root, split, annotation_gallery=True)
        paths |= {s.image_paths[n] for n in s.image_paths}
    _noise_images(root, sorted(paths))
    return root


@pytest.fixture(scope="module")
def cirr_root(tmp_path_factory):
    from conftest import SHARED_DATA

    ann = Path(SHARED_DATA) / "cir" / "cirr"
    if not (ann / "captions").is_dir():
        pytest.skip(f"CIRR annotations not found at {ann}")
    root = tmp_path_factory.mktemp("cirr")
    shutil.copytree(ann, root / "cirr")
    for split in ("val", "test1"):
        _noise_images(root, read_cirr(root, split).image_paths.values())
    return root


def test_circo_val_submission_scores_like_the_bench_result(circo_root, tmp_path):
    """The val files, scored with the server's formulas, give the bench result's numbers for
    the same (official-layout) weights: the submission path embeds and ranks as bench does."""
    ckpt = _official_pic2word(tmp_path / "pic2word.pt", "circo")
    sets = [*TINY, f"dataset.root={circo_root}", "dataset.annotation_gallery=true",
            f"model.checkpoint={ckpt}"]  # fmt: skip
    out = submit("pic2word", "circo", overrides=sets, results=tmp_path, split="val")
    (file,) = out.files
    assert file.name == "circo.json" and out.manifest["weights"]["loaded_from"] == str(ckpt)
    split = read_circo(circo_root, "val", annotation_gallery=True)
    scored = score_submission(read_submission(file), split)
    assert scored == out.manifest["scores"]
    run = bench("pic2word", "circo", 0, sets, results=tmp_path, progress=False)
    metrics = run.record["metrics"]
    shared = sorted(set(scored) & set(metrics))
    assert {"mAP@5", "mAP@10", "mAP@25", "mAP@50"} <= set(shared)
    for k in shared:
        assert scored[k] == pytest.approx(metrics[k], abs=1e-12), k
    assert metrics["mAP@50"] > 0  # noise images: low, but ranked, not empty


def test_circo_test_needs_the_official_gallery(circo_root, tmp_path):
    ckpt = _official_pic2word(tmp_path / "pic2word.pt", "circo")
    sets = [*TINY, f"dataset.root={circo_root}", "dataset.annotation_gallery=true",
            f"model.checkpoint={ckpt}"]  # fmt: skip
    with pytest.raises(ZsbenchError, match="123,403-image"):
        submit("pic2word", "circo", overrides=sets, results=tmp_path)
    assert not (tmp_path / "submissions").exists() or not any(
        p.is_file() for p in (tmp_path / "submissions").rglob("*")
    )


def test_trained_weights_come_from_the_bench_run_and_nothing_is_overwritten(circo_root, tmp_path):
    """Without a checkpoint, submit finds the weights `bench --save-weights` kept for the same
    config; without them it names the fix; a second submit refuses to replace the files."""
    imgs = circo_root / "COCO2017_unlabeled" / "unlabeled2017"
    sets = [*TINY, f"dataset.root={circo_root}", "dataset.annotation_gallery=true",
            f"dataset.train_images={imgs}", "trainer.max_epochs=1",
            "trainer.limit_train_batches=2", "trainer.batch_size=8"]  # fmt: skip
    with pytest.raises(ZsbenchError, match="--save-weights"):
        submit("pic2word", "circo", overrides=sets, results=tmp_path, split="val")
    run = bench("pic2word", "circo", 0, sets, results=tmp_path, progress=False,
                save_weights=True)  # fmt: skip
    out = submit("pic2word", "circo", overrides=sets, results=tmp_path, split="val")
    assert out.manifest["weights"]["loaded_from"] == run.record["weights"]["path"]
    for k, v in out.manifest["scores"].items():
        if k in run.record["metrics"]:
            assert v == pytest.approx(run.record["metrics"][k], abs=1e-12), k
    before = out.files[0].read_bytes()
    with pytest.raises(ZsbenchError, match="--overwrite"):
        submit("pic2word", "circo", overrides=sets, results=tmp_path, split="val")
    assert out.files[0].read_bytes() == before


def test_submit_refuses_a_split_override_and_datasets_without_a_server(tmp_path):
    with pytest.raises(ZsbenchError, match="--split"):
        submit("pic2word", "cirr", overrides=["dataset.split=test1"], results=tmp_path)
    with pytest.raises(ZsbenchError, match="no test server"):
        submit("pic2word", "fashioniq", results=tmp_path)
    with pytest.raises(ZsbenchError, match="CIR methods"):
        submit("frozen", "cirr", results=tmp_path)


@pytest.mark.slow
def test_cirr_test1_and_val_files_through_the_cli(cirr_root, tmp_path, capsys):
    """CIRR end to end: test1 gets the server's two files (every pairid, top 50 without the
    reference, top 3 of the image set); val's files score like the bench result."""
    ckpt = _official_pic2word(tmp_path / "pic2word.pt", "cirr")
    sets = [*TINY, f"dataset.root={cirr_root}", f"model.checkpoint={ckpt}"]
    args = ["submit", "--method", "pic2word", "--dataset", "cirr", "--results-dir", str(tmp_path)]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    assert "upload" in capsys.readouterr().out
    folder = next((tmp_path / "submissions").rglob("cirr-recall.json")).parent
    test1 = read_cirr(cirr_root, "test1")
    recall = json.loads((folder / "cirr-recall.json").read_text())
    subset = json.loads((folder / "cirr-recall_subset.json").read_text())
    assert (recall["version"], recall["metric"]) == ("rc2", "recall")
    assert subset["metric"] == "recall_subset"
    assert set(recall) - {"version", "metric"} == {q.query_id for q in test1.queries}
    gallery = set(test1.gallery)
    for q in test1.queries:
        top, sub = recall[q.query_id], subset[q.query_id]
        assert len(top) == 50 == len(set(top)) and q.reference not in top
        assert set(top) <= gallery
        assert len(sub) == 3 and set(sub) <= set(q.img_set) - {q.reference}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["split"] == "test1" and manifest["scores"] is None
    assert manifest["n_queries"] == len(test1.queries) == 4148

    assert main([*args, "--split", "val"]) == 0
    val_folder = next(p.parent for p in (tmp_path / "submissions").rglob("cirr-recall.json")
                      if "/val/" in str(p))  # fmt: skip
    val = read_cirr(cirr_root, "val")
    scored = {}
    for name in ("cirr-recall.json", "cirr-recall_subset.json"):
        scored.update(score_submission(read_submission(val_folder / name), val))
    run = bench("pic2word", "cirr", 0, sets, results=tmp_path, progress=False)
    for k in ("R@1", "R@5", "R@10", "R@50", "R_subset@1", "R_subset@2", "R_subset@3"):
        assert scored[k] == pytest.approx(run.record["metrics"][k], abs=1e-12), k
