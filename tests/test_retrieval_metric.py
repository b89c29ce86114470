"""The evaluator as a library: lazy top-level exports, the torchmetrics Metrics (single process,
with padding repeats, and gathered across 2 gloo processes) and the README's Lightning example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

import zsbench
from zsbench.errors import ZsbenchError
from zsbench.evaluation import evaluate_cir, evaluate_sbir, similarity_matrix
from zsbench.metrics.cir import CIRLabels, cir_metrics
from zsbench.metrics.retrieval_metric import CIRRetrieval, SBIRRetrieval

README = Path(__file__).resolve().parents[1] / "README.md"


def _tied_data(seed: int = 0, n_q: int = 37, n_g: int = 53):
    """Rounded features (many tied scores) over 5 classes."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_q, 6, generator=g).round()
    gal = torch.randn(n_g, 6, generator=g).round()
    ql, gl = torch.randint(0, 5, (n_q,), generator=g), torch.randint(0, 5, (n_g,), generator=g)
    return q, ql, gal, gl


def _assert_same(metrics: dict, reference: dict) -> None:
    assert set(metrics) == set(reference)
    for key, value in reference.items():
        assert float(metrics[key]) == pytest.approx(value, abs=1e-12), key


def test_import_zsbench_stays_light_and_exports_the_evaluator():
    code = "import sys, zsbench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert zsbench.evaluate_sbir is evaluate_sbir and zsbench.SBIRRetrieval is SBIRRetrieval
    assert zsbench.CIRLabels is CIRLabels and zsbench.evaluate_cir is evaluate_cir
    with pytest.raises(AttributeError, match="no attribute"):
        zsbench.not_a_name  # noqa: B018


@pytest.mark.parametrize("spec", ["default", "sake", "sem-pcyc"])
def test_metric_equals_evaluate_sbir_over_batches_with_ties(spec):
    q, ql, g, gl = _tied_data()
    metric = SBIRRetrieval(spec=spec)
    # mixed batches: a per-item domain tensor, queries and gallery interleaved
    z = torch.cat([q, g])
    y = torch.cat([ql, gl])
    d = torch.cat([torch.zeros(len(q)), torch.ones(len(g))]).long()
    perm = torch.randperm(len(z), generator=torch.Generator().manual_seed(1))
    for chunk in perm.split(16):
        metric.update(z[chunk], y[chunk], d[chunk])
    # without indexes the items keep the order they came in
    qp, gp = perm[d[perm] == 0], perm[d[perm] == 1]
    ref = evaluate_sbir(z[qp], y[qp], z[gp], y[gp], spec=spec, device="cpu")["metrics"]
    _assert_same(metric.compute(), ref)
    assert metric.result["n_queries"] == len(q) and metric.result["n_gallery"] == len(g)


def test_sbir_metric_takes_the_tie_rule_it_is_given():
    """On tied features the three tie rules differ, and the metric gives evaluate_sbir's number
    under each (the rule reaches the spec, not only the default)."""
    q, ql, g, gl = _tied_data(n_q=20, n_g=250)  # a gallery past the P@100 cut-off
    seen = set()
    for ties in ("expected", "pessimistic", "optimistic"):
        metric = SBIRRetrieval(spec="default", ties=ties)
        metric.update(q, ql, "query")
        metric.update(g, gl, "gallery")
        ref = evaluate_sbir(q, ql, g, gl, spec="default", ties=ties, device="cpu")["metrics"]
        got = metric.compute()
        _assert_same(got, ref)
        seen.add(round(float(got["P@100"]), 12))
    assert len(seen) == 3  # the data has ties that the rules order differently


def test_padding_repeats_are_dropped_by_index_and_counted_without_it():
    q, ql, g, gl = _tied_data(seed=2)
    ref = evaluate_sbir(q, ql, g, gl, device="cpu")["metrics"]
    repeat = torch.tensor([0, 1, 2])  # a DistributedSampler repeats the first items
    with_index = SBIRRetrieval()
    without = SBIRRetrieval()
    for metric, use_index in ((with_index, True), (without, False)):
        metric.update(q, ql, "query", torch.arange(len(q)) if use_index else None)
        metric.update(q[repeat], ql[repeat], "query", repeat if use_index else None)
        metric.update(g, gl, "gallery", torch.arange(len(g)) if use_index else None)
    _assert_same(with_index.compute(), ref)
    assert without.compute() and without.result["n_queries"] == len(q) + 3


def test_metric_errors_name_the_problem():
    metric = SBIRRetrieval()
    with pytest.raises(ZsbenchError, match="domain"):
        metric.update(torch.randn(2, 3), torch.tensor([0, 1]), "sketches")
    with pytest.raises(ZsbenchError, match="one value per embedding"):
        metric.update(torch.randn(2, 3), torch.tensor([0, 1, 2]), "query")
    metric.update(torch.randn(2, 3), torch.tensor([0, 1]), "query")
    with pytest.raises(ZsbenchError, match="no gallery embeddings"):
        metric.compute()
    with pytest.raises(ZsbenchError, match="spec"):
        SBIRRetrieval(spec="not-a-spec")
    with pytest.raises(ZsbenchError, match=r"^domain must be one value per embedding \(2\)"):
        metric.update(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0, 1, 1]))
    with pytest.raises(ZsbenchError, match=r"^indexes must be one value per embedding \(2\)"):
        metric.update(torch.randn(2, 3), torch.tensor([0, 1]), "query", torch.tensor([0]))


def _ddp_worker(rank: int, world: int, port: int, data, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        q, ql, g, gl = data
        z, y = torch.cat([q, g]), torch.cat([ql, gl])
        d = torch.cat([torch.zeros(len(q)), torch.ones(len(g))]).long()
        # an odd-sized set: the sampler pads this rank's shard with repeated items
        sampler = DistributedSampler(range(len(z)), world, rank, shuffle=True, seed=3)
        idx = torch.tensor(list(sampler))
        sbir = SBIRRetrieval()
        for chunk in idx.split(7):
            sbir.update(z[chunk], y[chunk], d[chunk], chunk)
        cir = CIRRetrieval("fashioniq")
        g_idx = torch.tensor(list(DistributedSampler(range(len(g)), world, rank, shuffle=False)))
        q_idx = torch.tensor(list(DistributedSampler(range(len(q)), world, rank, shuffle=False)))
        cir.update_gallery(g[g_idx], g_idx)
        cir.update(q[q_idx], q_idx % len(g), indexes=q_idx)
        out[rank] = (
            {k: float(v) for k, v in sbir.compute().items()},
            {k: float(v) for k, v in cir.compute().items()},
            len(idx),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_with_padded_shards_give_the_single_process_numbers():
    data = _tied_data(seed=4, n_q=37, n_g=52)  # 89 items: padded to 90 over 2 ranks
    q, ql, g, gl = data
    ref_sbir = evaluate_sbir(q, ql, g, gl, device="cpu")["metrics"]
    no_reference = torch.full((len(q),), -1)
    labels = CIRLabels("fashioniq", torch.arange(len(q)) % len(g), no_reference)
    ref_cir = cir_metrics(similarity_matrix(q, g), labels)
    out = mp.Manager().dict()
    port = 29600 + os.getpid() % 1000
    mp.spawn(_ddp_worker, args=(2, port, data, out), nprocs=2, join=True)
    for rank in (0, 1):
        sbir, cir, shard = out[rank]
        assert shard == 45  # each rank saw half, one item twice
        _assert_same(sbir, ref_sbir)
        _assert_same(cir, ref_cir)


def _cir_labels(protocol: str, n_q: int, n_g: int, seed: int = 0) -> CIRLabels:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, n_g, (n_q,), generator=g)
    reference = (target + 1) % n_g
    members = torch.stack([target, reference, (target + 2) % n_g, (target + 3) % n_g], 1)
    members[0, 3] = -1  # padding
    gt = torch.stack([target, (target + 5) % n_g, torch.full_like(target, -1)], 1)
    return CIRLabels(protocol, target, reference, members=members, gt=gt)


@pytest.mark.parametrize("protocol", ["fashioniq", "cirr", "circo"])
def test_cir_metric_and_evaluate_cir_equal_the_score_matrix_metrics(protocol):
    gen = torch.Generator().manual_seed(5)
    q, g = torch.randn(40, 8, generator=gen), torch.randn(60, 8, generator=gen)
    labels = _cir_labels(protocol, 40, 60)
    ref = cir_metrics(similarity_matrix(q, g), labels)
    assert evaluate_cir(q, g, labels, chunk_size=7) == pytest.approx(ref, abs=1e-12)
    # the gallery arrives shuffled, in two calls; queries in three, with a repeat
    metric = CIRRetrieval(protocol, max_members=6, max_gt=4)
    perm = torch.randperm(60, generator=gen)
    for part in perm.split(31):
        metric.update_gallery(g[part], part)
    for sl in (slice(0, 15), slice(15, 40), slice(0, 2)):
        rows = torch.arange(40)[sl]
        metric.update(
            q[sl], labels.target[sl], labels.reference[sl], labels.members[sl], labels.gt[sl], rows
        )
    _assert_same(metric.compute(), ref)


def test_cir_metric_errors_name_the_problem():
    with pytest.raises(ZsbenchError, match="unknown CIR protocol"):
        CIRRetrieval("cirrr")
    metric = CIRRetrieval("fashioniq", max_gt=2)
    with pytest.raises(ZsbenchError, match="max_gt"):
        metric.update(
            torch.randn(1, 4), torch.tensor([0]), gt=torch.tensor([[1, 2, 0]])
        )  # gallery index 0 is an item too
    metric.update_gallery(torch.randn(3, 4), torch.arange(3))
    metric.update(torch.randn(2, 4), torch.tensor([0, 7]))
    with pytest.raises(ZsbenchError, match=r"gallery indices \[7\]"):
        metric.compute()
    no_zero = CIRRetrieval("fashioniq")
    no_zero.update_gallery(torch.randn(3, 4), torch.arange(1, 4))
    no_zero.update(torch.randn(1, 4), torch.tensor([0]))
    with pytest.raises(ZsbenchError, match=r"gallery indices \[0\]"):
        no_zero.compute()
    with pytest.raises(ZsbenchError, match="CIRLabels"):
        evaluate_cir(torch.randn(2, 4), torch.randn(3, 4), {"target": [0, 1]})
    labels = CIRLabels("fashioniq", torch.tensor([0, 1]), torch.tensor([-1, -1]))
    with pytest.raises(ZsbenchError, match=r"^query features must be a 2-D array"):
        evaluate_cir(torch.randn(4), torch.randn(3, 4), labels)
    with pytest.raises(
        ZsbenchError, match=r"^members must be \[B, S\] gallery indices, got \(1,\)"
    ):
        CIRRetrieval("cirr").update(torch.randn(1, 4), torch.tensor([0]), members=torch.tensor([0]))
    with pytest.raises(ZsbenchError, match=r"needs update\(\) and update_gallery\(\)"):
        CIRRetrieval("cirr").compute()
    # the documented default width of the ground-truth rows
    wide_gt = torch.arange(33).unsqueeze(0)
    with pytest.raises(ZsbenchError, match=r"more than max_gt=32"):
        CIRRetrieval("circo").update(torch.randn(1, 4), torch.tensor([0]), gt=wide_gt)


def test_cir_metric_without_reference_removes_nothing_and_widens_ragged_rows():
    """reference=None is "no reference" (-1), not gallery row 1; members of batches with
    different widths are padded to one width, so they concatenate."""
    gen = torch.Generator().manual_seed(8)
    q, g = torch.randn(12, 5, generator=gen), torch.randn(9, 5, generator=gen)
    target = torch.arange(12) % 9
    members = torch.stack([target, (target + 1) % 9, (target + 2) % 9], 1)
    no_reference = torch.full((12,), -1)
    metric = CIRRetrieval("cirr", max_members=4)
    metric.update_gallery(g, torch.arange(9))
    metric.update(q[:5], target[:5], members=members[:5, :2], indexes=torch.arange(5))
    metric.update(q[5:], target[5:], members=members[5:], indexes=torch.arange(5, 12))
    # the first 5 queries saw 2 of their 3 members: rescore them that way
    narrow = members.clone()
    narrow[:5, 2] = -1
    ref = cir_metrics(similarity_matrix(q, g), CIRLabels("cirr", target, no_reference, narrow))
    _assert_same(metric.compute(), ref)


@pytest.mark.parametrize("similarity", ["euclidean", "dot"])
def test_evaluate_cir_uses_the_similarity_it_is_given(similarity):
    gen = torch.Generator().manual_seed(9)
    q, g = torch.randn(30, 6, generator=gen), torch.randn(25, 6, generator=gen) * 3
    labels = _cir_labels("circo", 30, 25)
    ref = cir_metrics(similarity_matrix(q, g, similarity), labels)
    assert evaluate_cir(q, g, labels, similarity=similarity, chunk_size=8) == pytest.approx(
        ref, abs=1e-12
    )
    assert ref != cir_metrics(similarity_matrix(q, g), labels)  # the choice matters here


def test_readme_lightning_example_runs_and_logs_the_exact_map(tmp_path):
    text = README.read_text()
    section = text[text.index("### Use from Python") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    import lightning as L
    from torch.utils.data import DataLoader

    q, ql, g, gl = _tied_data(seed=6)
    x = torch.nn.functional.pad(torch.cat([q, g]), (0, 10))
    y, n = torch.cat([ql, gl]), len(q) + len(g)
    d = torch.cat([torch.zeros(len(q)), torch.ones(len(g))]).long()
    items = [{"x": x[i], "label": y[i], "domain": d[i], "index": i} for i in range(n)]
    model = namespace["MyModel"]()
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    (logged,) = trainer.validate(model, DataLoader(items, batch_size=16), verbose=False)
    with torch.no_grad():
        z = model.net(x)
    ref = evaluate_sbir(z[: len(q)], ql, z[len(q) :], gl, device="cpu")["metrics"]["mAP@all"]
    assert logged["val/mAP"] == pytest.approx(ref, abs=1e-6)


def test_cir_tie_rule_reaches_the_metric_and_the_library_evaluator():
    """Duplicated gallery vectors tie the target with another image: the three rules give
    R@1 = 1/2, 0 and 1, through evaluate_cir and CIRRetrieval alike."""
    from zsbench.metrics.cir import CIRLabels

    g = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    q = torch.tensor([[1.0, 0.1]])
    members = torch.tensor([[0, 1, 2]])
    labels = CIRLabels("cirr", torch.tensor([1]), torch.tensor([-1]), members=members)
    for ties, want in (("expected", 0.5), ("pessimistic", 0.0), ("optimistic", 1.0)):
        got = evaluate_cir(q, g, labels, ties=ties)
        assert (got["R@1"], got["R_subset@1"], got["R@5"]) == (want, want, 1.0), ties
        metric = CIRRetrieval("cirr", ties=ties)
        metric.update(q, target=torch.tensor([1]), members=members, indexes=torch.tensor([0]))
        metric.update_gallery(g, indexes=torch.arange(3))
        assert {k: float(v) for k, v in metric.compute().items()} == got
    with pytest.raises(ValueError, match="tie rule"):
        CIRRetrieval("cirr", ties="random")
