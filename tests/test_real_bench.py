"""Benchmarks on the real 21-class Sketchy slice (skipped without ../shared/data)."""

from __future__ import annotations

import pytest

from zsbench.runner import bench

pytestmark = [pytest.mark.needs_data, pytest.mark.slow]


def test_supervised_beats_frozen_on_real_sketches(shared_data, tmp_path, monkeypatch):
    """At a CPU-test resolution (96 px); `make bench DATASET=sketchy21-mini` runs at 224 px."""
    monkeypatch.setenv("ZSBENCH_DATA", str(shared_data))
    small = ["dataset.image_size=96"]
    frozen = bench("frozen", "sketchy21-mini", overrides=small, results=tmp_path, progress=False)
    again = bench(
        "frozen", "sketchy21-mini", overrides=small, results=tmp_path / "b", progress=False
    )
    sup = bench("supervised", "sketchy21-mini", overrides=small, results=tmp_path, progress=False)
    f, s = frozen.record, sup.record
    assert f["split"] == "mini-seed0" and f["split_manifest"]["n_unseen_classes"] == 6
    assert f["n_queries"] == 600 and f["n_gallery"] == 600
    # the second run (other results folder, same data and backbone) reuses the cached features
    assert not f["timings"]["feature_cache_hit"] and again.record["timings"]["feature_cache_hit"]
    assert again.record["metrics"] == f["metrics"]
    assert s["metrics"]["mAP@all"] > f["metrics"]["mAP@all"] > f["chance"]["mAP@all"]
    # songbird photos include ImageNet-1k bird synsets: the leakage flag says so
    assert (
        f["leakage"]["leak"]
        and "songbird" in f["leakage"]["unseen_classes_in_pretraining_by_wordnet_id"]
    )
