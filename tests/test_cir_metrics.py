"""ZS-CIR metrics (zsbench.metrics.cir): hand-computed rankings and a naive per-query loop, the
chunking and score dtypes, both caption orders, and the index arguments and input errors (each
message's key fragment)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_metrics import f64, raises_exactly

from zsbench.errors import ZsbenchError
from zsbench.metrics.cir import (
    CIRLabels,
    ap_at_k,
    cir_metrics,
    circo_metrics,
    cirr_metrics,
    combine_caption_orders,
    fashioniq_mean,
    fashioniq_metrics,
    index_tensor,
    recall_from_ranks,
    subset_ranks,
    target_ranks,
)


def row(*values) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64)


# ----------------------------------------------------------------------------- hand-computed


def test_reference_removal_changes_recall_at_1():
    # the reference (0) scores highest, the target (1) second
    s = row(0.9, 0.8, 0.1, 0.0)
    assert target_ranks(s, [1]).tolist() == [2]
    assert target_ranks(s, [1], exclude=[0]).tolist() == [1]
    kept = fashioniq_metrics(s, [1], ks=(1, 2))  # FashionIQ keeps the reference
    assert kept == {"R@1": 0.0, "R@2": 1.0}
    cirr = cirr_metrics(s, [1], [0], [[0, 1, 2, 3]], ks=(1,), subset_ks=(1,))
    assert cirr == {"R@1": 1.0, "R_subset@1": 1.0}


def test_subset_recall_within_img_set_reference_excluded():
    # gallery 0..7; img_set = {0 (reference), 2, 4, 5, 6, 7}; the target is 5.
    s = row(0.99, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5)
    members = [[0, 2, 4, 5, 6, 7]]
    # full gallery without the reference: 1, 2, 3, 4 beat the target -> rank 5
    assert target_ranks(s, [5], exclude=[0]).tolist() == [5]
    # within the set, minus the reference: 2 and 4 beat it -> rank 3
    assert subset_ranks(s, [5], members, [0]).tolist() == [3]
    # without removing the reference it would be rank 4
    assert subset_ranks(s, [5], members).tolist() == [4]
    m = cirr_metrics(s, [5], [0], members, ks=(1, 5, 10), subset_ks=(1, 2, 3))
    assert m == {
        "R@1": 0.0,
        "R@5": 1.0,
        "R@10": 1.0,
        "R_subset@1": 0.0,
        "R_subset@2": 0.0,
        "R_subset@3": 1.0,
        "Avg": 0.5,  # (R@5 + R_subset@1) / 2
    }


def test_multi_gt_map_at_k_worked_example():
    # 10 items in descending score order 0..9; ground truths at ranks 1, 3 and 6.
    s = torch.linspace(1.0, 0.1, 10, dtype=torch.float64)[None]
    gt = [[0, 2, 5]]
    ap = ap_at_k(s, gt, ks=(1, 2, 5, 10))
    # precisions at the hits: 1/1, 2/3, 3/6
    assert ap[1].item() == pytest.approx(1.0 / 1)  # min(3, 1) = 1
    assert ap[2].item() == pytest.approx(1.0 / 2)  # only rank 1 is in the top 2; / min(3, 2)
    assert ap[5].item() == pytest.approx((1 + 2 / 3) / 3)
    assert ap[10].item() == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)
    # ground-truth order in the input does not matter
    assert ap_at_k(s, [[5, 0, 2]], ks=(5,))[5].item() == pytest.approx(ap[5].item())
    # more ground truths than k: six hits in the top 6 give AP@5 = 5/5
    assert ap_at_k(s, [[0, 1, 2, 3, 4, 5]], ks=(5,))[5].item() == pytest.approx(1.0)
    m = circo_metrics(s, gt, ks=(5, 10))
    assert m["mAP@5"] == pytest.approx((1 + 2 / 3) / 3)
    assert m["R@5"] == 1.0  # the main target (first gt) is ranked first


def test_circo_recall_uses_main_target_only():
    s = torch.linspace(1.0, 0.1, 10, dtype=torch.float64)[None]
    # main target at rank 7, another ground truth at rank 1
    m = circo_metrics(s, [[6, 0]], ks=(5, 10))
    assert m["R@5"] == 0.0 and m["R@10"] == 1.0
    assert m["mAP@5"] == pytest.approx(1 / 2)  # 1/1 over min(2, 5)


def test_circo_recall_uses_the_given_target_not_the_first_ground_truth():
    """CIRCO R@k ranks ``target``; only when it is None does the first ground truth stand in."""
    s = f64([0.9, 0.8, 0.7])
    gt = torch.tensor([[0, 2]])
    # target 2 is at rank 3: R@1 = 0 (while gt[:, 0] = item 0 would give 1)
    got = circo_metrics(s, gt, target=torch.tensor([2]), ks=(1,))
    assert got["R@1"] == 0.0 and got["mAP@1"] == 1.0
    assert circo_metrics(s, gt, ks=(1,))["R@1"] == 1.0
    # through cir_metrics: six items, the target (item 5) at rank 6, gt[:, 0] (item 0) at 1
    labels = CIRLabels("circo", torch.tensor([5]), torch.tensor([-1]), gt=torch.tensor([[0, 5]]))
    assert cir_metrics(f64([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), labels)["R@5"] == 0.0


def test_subset_rank_ignores_padding_when_a_reference_is_given():
    """-1 padding stays out of the image set when the reference is removed too."""
    # scores 0.9 (item 0), 0.8 (item 1, the reference), 0.7 (item 2, the target); the set
    # [1, 2, -1] minus the reference holds only the target: rank 1 (item 0 is not a member)
    s = f64([0.9, 0.8, 0.7])
    assert subset_ranks(s, [2], [[1, 2, -1]], [1]).tolist() == [1]
    assert subset_ranks(s, [2], [[1, 2, -1]]).tolist() == [2]  # reference kept: 0.8 >= 0.7


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_circo_ap_at_k_on_cuda_by_hand():
    """CIRCO AP@k with scores on CUDA: ground truths at ranks 1 and 3 -> (1 + 2/3) / 2."""
    s = torch.tensor([[0.9, 0.8, 0.7]], device="cuda")
    assert float(ap_at_k(s, [[0, 2]], ks=(3,))[3][0]) == pytest.approx((1 + 2 / 3) / 2)


def test_ties_follow_the_tie_rule():
    s = row(0.5, 0.5, 0.5, 0.1)
    assert target_ranks(s, [1]).tolist() == [3]  # both equal items counted before it
    # gts 0 and 1 tie with the non-gt 2; it lands at rank 1, 2 or 3 (gts at 2,3 / 1,3 / 1,2)
    pess = ap_at_k(s, [[0, 1]], ks=(2, 3), ties="pessimistic")
    assert pess[2].item() == pytest.approx((1 / 2) / 2)
    assert pess[3].item() == pytest.approx((1 / 2 + 2 / 3) / 2)
    opt = ap_at_k(s, [[0, 1]], ks=(2, 3), ties="optimistic")
    assert opt[2].item() == opt[3].item() == pytest.approx(1.0)
    exp = ap_at_k(s, [[0, 1]], ks=(2, 3))  # expected: the default
    assert exp[2].item() == pytest.approx((0.25 + 0.5 + 1.0) / 3)
    assert exp[3].item() == pytest.approx(((1 / 2 + 2 / 3) / 2 + (1 + 2 / 3) / 2 + 1.0) / 3)
    # one target tied with two others: rank 1, 2 or 3 with probability 1/3 each
    for ties, r1, r2 in (("expected", 1 / 3, 2 / 3), ("pessimistic", 0, 0), ("optimistic", 1, 1)):
        m = fashioniq_metrics(s, [1], ks=(1, 2), ties=ties)
        assert m == pytest.approx({"R@1": r1, "R@2": r2}), ties
    sub = cirr_metrics(s, [1], [3], [[0, 1, 2, 3]], ks=(1,), subset_ks=(1, 2), ties="expected")
    assert sub == pytest.approx({"R@1": 1 / 3, "R_subset@1": 1 / 3, "R_subset@2": 2 / 3})
    with pytest.raises(ValueError, match="tie rule"):
        cir_metrics(s, CIRLabels("fashioniq", torch.tensor([1]), torch.tensor([-1])), ties="x")


def _tie_orders(values: np.ndarray):
    """Every order inside the tie groups of one score row, each as a row without ties (an
    item earlier in its group's permutation gets the higher score)."""
    groups: dict[float, list[int]] = {}
    for j, v in enumerate(values):
        groups.setdefault(float(v), []).append(j)
    for combo in itertools.product(*(itertools.permutations(g) for g in groups.values())):
        r = values.astype(np.float64).copy()
        for perm in combo:
            for pos, j in enumerate(perm):
                r[j] -= pos * 1e-3
        yield r


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tie_rules_are_the_mean_min_and_max_over_every_tie_order(seed):
    """On integer scores full of ties: ``expected`` is the mean of the official (naive) metric
    over every order inside the tie groups, ``pessimistic`` its minimum, ``optimistic`` its
    maximum; query by query, for R@k (reference removed), R_subset@k and CIRCO's mAP@k."""
    rng = np.random.default_rng(seed)
    G, ks, subset_ks, circo_ks = 7, (1, 2, 4), (1, 2), (1, 3, 5)
    for _ in range(3):
        values = rng.integers(0, 3, G).astype(np.float64)
        target, reference = int(rng.integers(1, G)), 0
        members = [reference, target, *rng.choice([j for j in range(1, G) if j != target], 2,
                                                  replace=False).tolist()]  # fmt: skip
        gt = [target, *rng.choice([j for j in range(G) if j != target], 2, replace=False)]
        per_order = [
            naive(r[None], [target], [reference], [members], [gt], ks, subset_ks, ())
            | naive(r[None], [target], [-1], [members], [gt], (), (), circo_ks)
            for r in _tie_orders(values)
        ]
        s = torch.tensor(values)[None]
        for ties, pick in (("expected", np.mean), ("pessimistic", np.min),
                           ("optimistic", np.max)):  # fmt: skip
            got = cirr_metrics(s, [target], [reference], [members], ks=ks, subset_ks=subset_ks,
                               ties=ties)  # fmt: skip
            got |= {k: v for k, v in circo_metrics(s, [gt], ks=circo_ks, ties=ties).items()
                    if k.startswith("mAP")}  # fmt: skip
            for key, value in got.items():
                if key == "Avg":
                    continue
                want = pick([o[key] for o in per_order])
                assert value == pytest.approx(want, abs=1e-12), (ties, key, values.tolist())


def test_excluded_items_and_padding():
    s = row(0.9, 0.8, 0.7, 0.6)
    ap = ap_at_k(s, [[1, 3, -1, -1]], ks=(4,), exclude=[[0, -1]])
    assert ap[4].item() == pytest.approx((1 / 1 + 2 / 3) / 2)
    ex = circo_metrics(s, [[1, -1]], exclude=[0], ks=(1,))
    assert ex == {"mAP@1": 1.0, "R@1": 1.0}


# ----------------------------------------------------------------------------- naive reference


def naive(scores: np.ndarray, target, reference, members, gt, ks, subset_ks, circo_ks):
    """The official code's approach, per query: sort, drop the reference, read positions."""
    out = {f"R@{k}": [] for k in ks} | {f"R_subset@{k}": [] for k in subset_ks}
    out |= {f"mAP@{k}": [] for k in circo_ks}
    for i in range(len(scores)):
        order = [j for j in np.argsort(-scores[i], kind="stable") if j != reference[i]]
        pos = order.index(target[i]) + 1
        for k in ks:
            out[f"R@{k}"].append(pos <= k)
        sub = [j for j in order if j in members[i]]
        for k in subset_ks:
            out[f"R_subset@{k}"].append(target[i] in sub[:k])
        labels = np.isin(order, gt[i])
        prec = np.cumsum(labels) * labels / np.arange(1, len(order) + 1)
        for k in circo_ks:
            out[f"mAP@{k}"].append(prec[:k].sum() / min(len(gt[i]), k))
    out = {k: float(np.mean(v)) for k, v in out.items()}
    if 5 in ks and 1 in subset_ks:
        out["Avg"] = (out["R@5"] + out["R_subset@1"]) / 2
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_naive_loop_on_random_data(seed):
    rng = np.random.default_rng(seed)
    Q, G = 37, 60
    scores = rng.standard_normal((Q, G)).astype(np.float32)
    reference = rng.integers(0, G, Q)
    members, target, gt = [], [], []
    for i in range(Q):
        others = rng.permutation([j for j in range(G) if j != reference[i]])
        members.append([reference[i], *others[:5]])
        target.append(int(others[0]))
        gt.append(list(others[: int(rng.integers(1, 8))]))  # target first
    ks, sks, cks = (1, 5, 10, 25, 50), (1, 2, 3), (5, 10, 25, 50)
    want = naive(scores, target, reference, members, gt, ks, sks, cks)
    got = cirr_metrics(scores, target, reference, members, chunk_size=7)
    for k, v in got.items():
        assert v == pytest.approx(want[k], abs=1e-12), k
    gt_pad = np.full((Q, 7), -1)
    for i, g in enumerate(gt):
        gt_pad[i, : len(g)] = g
    circo = circo_metrics(scores, gt_pad, exclude=reference, chunk_size=5)
    for k in cks:
        assert circo[f"mAP@{k}"] == pytest.approx(want[f"mAP@{k}"], abs=1e-12)
        assert circo[f"R@{k}"] == pytest.approx(want[f"R@{k}"], abs=1e-12)
    # chunk size never changes a value
    assert circo == circo_metrics(scores, gt_pad, exclude=reference, chunk_size=1000)


def test_cir_metrics_dispatch_and_fashioniq_mean():
    rng = np.random.default_rng(3)
    s = torch.as_tensor(rng.standard_normal((20, 30)))
    t = torch.as_tensor(rng.integers(0, 30, 20))
    labels = CIRLabels("fashioniq", t, torch.full((20,), -1))
    assert cir_metrics(s, labels) == fashioniq_metrics(s, t)
    assert set(cir_metrics(s, labels)) == {"R@10", "R@50"}
    per = {"dress": {"R@10": 0.2, "R@50": 0.4}, "shirt": {"R@10": 0.3, "R@50": 0.5}}
    m = fashioniq_mean(per)
    assert m["mean/R@10"] == pytest.approx(0.25) and m["shirt/R@50"] == 0.5
    with pytest.raises(ZsbenchError, match="cirr protocol needs members"):
        CIRLabels("cirr", t, t)
    with pytest.raises(ZsbenchError, match="unknown CIR protocol"):
        CIRLabels("cirrr", t, t)


# ----------------------------------------------------------------------------- the CIR specs


def _labels_of_every_protocol(n_q: int = 12, n_g: int = 20):
    rng = np.random.default_rng(5)
    t = torch.as_tensor(rng.permutation(n_g)[:n_q])
    ref = torch.as_tensor([(int(x) + 1) % n_g for x in t])
    members = torch.stack([t, ref, (t + 2) % n_g, (t + 3) % n_g], 1)
    gt = torch.stack([t, (t + 5) % n_g, torch.full_like(t, -1)], 1)
    return torch.as_tensor(rng.standard_normal((n_q, n_g))), {
        "fashioniq": CIRLabels("fashioniq", t, torch.full_like(t, -1)),
        "cirr": CIRLabels("cirr", t, ref, members=members),
        "circo": CIRLabels("circo", t, torch.full_like(t, -1), gt=gt),
    }


def test_every_protocol_has_a_spec_whose_keys_are_the_metrics_it_reports():
    from zsbench import get_cir_spec
    from zsbench.metrics.cir import PROTOCOLS
    from zsbench.metrics.cir_specs import CIR_SPECS
    from zsbench.metrics.specs import get_spec

    assert set(CIR_SPECS) == set(PROTOCOLS)
    scores, labels = _labels_of_every_protocol()
    sbir_keys = set(get_spec("default").to_dict())
    for protocol, lab in labels.items():
        spec = get_cir_spec(protocol)
        assert spec.keys == list(cir_metrics(scores, lab)), protocol
        d = spec.to_dict()
        assert sbir_keys <= set(d) and d["name"] == protocol and d["ties"] == "expected"
        assert list(d["metrics"]) == spec.keys
        assert all(v["definition"] for v in d["metrics"].values())
        assert get_cir_spec(protocol, "pessimistic").to_dict()["ties"] == "pessimistic"
    with pytest.raises(ZsbenchError, match=r"Unknown CIR protocol 'cir'.*Known: circo, cirr"):
        get_cir_spec("cir")
    with pytest.raises(ValueError, match="unknown tie rule 'random'"):
        get_cir_spec("cirr", "random")


_RANK = (
    "rank = 1-based position in the gallery sorted by descending score, ties by the spec's rule; "
)


def test_cir_spec_definitions_word_for_word():
    """What every CIR result records as its metrics' definitions (one key of each family; the
    others differ only by k)."""
    from zsbench.metrics.cir_specs import CIR_SPECS

    def recall(k, where):
        return f"{_RANK}fraction of queries whose target has rank <= {k} {where}."

    expected = {
        ("fashioniq", "R@50"): recall(50, "in the category's gallery, reference kept"),
        ("cirr", "R@10"): recall(10, "in the gallery without the query's reference"),
        ("cirr", "R_subset@2"): recall(2, "among the query's img_set members, reference removed"),
        ("cirr", "Avg"): "(R@5 + R_subset@1) / 2, the number most CIRR tables print.",
        ("circo", "R@25"): recall(25, "in the gallery (the main target only)"),
        ("circo", "mAP@10"): (
            f"{_RANK}mean over queries of AP@10 = sum of j / r_j over the ground truths with "
            "rank r_j <= 10 (the j-th in descending score), divided by min(#gt, 10); "
            "reference kept."
        ),
    }
    for (protocol, key), text in expected.items():
        metrics = CIR_SPECS[protocol].to_dict()["metrics"]
        assert metrics[key] == {"definition": text}
        family = key.split("@")[0]
        for other, d in metrics.items():
            if other.split("@")[0] == family and "@" in key:
                k_new, k_old = other.split("@")[1], key.split("@")[1]
                assert d["definition"] == text.replace(k_old, k_new), other
    heads = {n: (s.description, s.source, s.notes) for n, s in CIR_SPECS.items()}
    assert heads == {
        "fashioniq": (
            "FashionIQ validation: R@10 and R@50 per category and their mean.",
            "FashionIQ (Wu et al., CVPR 2021); SEARLE's and LinCIR's validate.py",
            (
                "Reported per category as '<category>/R@k' and as 'mean/R@k', the unweighted "
                "mean over the categories (SEARLE's average_fiq_recall_at10), not over queries.",
            ),
        ),
        "cirr": (
            "CIRR: R@1/5/10/50 without the reference, R_subset@1/2/3 and Avg.",
            "CIRR (Liu et al., ICCV 2021) and its test server; SEARLE's validate.py",
            (),
        ),
        "circo": (
            "CIRCO: mAP@5/10/25/50 over every ground truth, R@k on the main target.",
            "CIRCO (Baldrati et al., ICCV 2023), src/evaluation.py and its test server",
            (),
        ),
    }
    d = CIR_SPECS["cirr"].with_ties("optimistic").to_dict()
    assert d["definition"] == "zsbench.metrics.cir (docs/cir.md)" and d["version"]
    assert d["ties_definition"].startswith("Ties: relevant items ranked first")
    assert CIR_SPECS["cirr"].with_ties(None) is CIR_SPECS["cirr"]


def test_queries_without_anything_relevant_are_counted():
    _, labels = _labels_of_every_protocol()
    assert [lab.n_without_positive for lab in labels.values()] == [0, 0, 0]
    t = torch.tensor([0, -1, -1])  # gallery index 0 is a target like any other
    assert CIRLabels("fashioniq", t, torch.full_like(t, -1)).n_without_positive == 2
    gt = torch.tensor([[0, -1], [-1, -1], [2, 4]])
    assert CIRLabels("circo", gt[:, 0], torch.full((3,), -1), gt=gt).n_without_positive == 1


# ----------------------------------------------------------------- chunk sizes and score dtypes


def test_cir_metrics_passes_chunk_size_to_every_protocol():
    """cir_metrics forwards chunk_size: 0 is rejected for fashioniq, cirr and circo alike."""
    s = f64([0.9, 0.8, 0.7])
    t, none = torch.tensor([0]), torch.tensor([-1])
    for labels in (
        CIRLabels("fashioniq", t, none),
        CIRLabels("cirr", t, torch.tensor([1]), members=torch.tensor([[0, 1]])),
        CIRLabels("circo", t, none, gt=torch.tensor([[0]])),
    ):
        with pytest.raises(ZsbenchError, match="chunk_size must be >= 1, got 0"):
            cir_metrics(s, labels, chunk_size=0)


def test_cir_chunk_size_one_is_allowed():
    """chunk_size 1 (one query per chunk) gives the same metrics as one chunk."""
    s = f64([0.9, 0.8, 0.7], [0.1, 0.5, 0.3])
    # query 0: target 2 at rank 3; query 1: target 1 at rank 1
    assert fashioniq_metrics(s, [2, 1], ks=(1, 3), chunk_size=1) == {"R@1": 0.5, "R@3": 1.0}


def test_cir_scores_in_bfloat16_and_integers():
    """Scores of any dtype: bfloat16 tensors (numpy has no bfloat16) are ranked as they are,
    integer scores as float64 -- where the excluded items are set to -inf."""
    bf = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]], dtype=torch.bfloat16)
    # query 0: target 2 scores lowest -> rank 3; query 1: target 0 scores lowest -> rank 3
    assert target_ranks(bf, [2, 0]).tolist() == [3, 3]
    assert fashioniq_metrics(bf, [0, 2], ks=(1,), chunk_size=1) == {"R@1": 1.0}
    ints = torch.tensor([[3, 2, 1]])
    # item 0 (score 3) excluded: target 1 moves from rank 2 to rank 1
    assert target_ranks(ints, [1], exclude=[0]).tolist() == [1]
    assert target_ranks(np.array([[3, 2, 1]]), [1], exclude=[[0]]).tolist() == [1]
    got = ap_at_k(ints, [[1, 2]], ks=(2,), exclude=[0])[2]
    assert got.dtype == torch.float64 and got.tolist() == [1.0]  # ranks 1, 2 of 2 ground truths


# -------------------------------------------------------------------------- both caption orders


def test_both_caption_orders_rank_like_mean_score():
    g = F.normalize(torch.randn(50, 8, dtype=torch.float64), dim=-1)
    a, b = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    q = combine_caption_orders(a, b)
    assert torch.allclose(q.norm(dim=-1), torch.ones(6, dtype=torch.float64))
    mean_scores = (F.normalize(a, dim=-1) @ g.T + F.normalize(b, dim=-1) @ g.T) / 2
    assert torch.equal(torch.argsort(q @ g.T, 1), torch.argsort(mean_scores, 1))


def test_combine_caption_orders_is_the_normalised_mean():
    """normalize((normalize(a) + normalize(b)) / 2), F.normalize's eps of 1e-12 included."""
    a, b = f64([3.0, 4.0]), f64([0.0, 2.0])
    # (0.6, 0.8) + (0, 1) = (0.6, 1.8), over 2 -> (0.3, 0.9), norm sqrt(0.9)
    want = [0.3 / math.sqrt(0.9), 0.9 / math.sqrt(0.9)]
    assert combine_caption_orders(a, b)[0].tolist() == pytest.approx(want)
    # nearly opposite orders: the mean (0, 1e-12) / 2 has norm 5e-13 < eps, so F.normalize
    # divides by eps: (0, 0.5) -- the halving is visible
    got = combine_caption_orders(f64([1.0, 0.0]), f64([-1.0, 1e-12]))
    assert got[0].tolist() == pytest.approx([0.0, 0.5], abs=1e-9)


def test_combine_caption_orders_on_one_vector_and_on_batches_of_batches():
    """Normalised along the last dimension whatever the leading ones: a single [D] query gives
    row 0 of the batch, and a [2, 1, D] batch the batch's rows."""
    a, b = f64([3.0, 4.0], [1.0, 0.0]), f64([0.0, 2.0], [0.0, 5.0])
    batch = combine_caption_orders(a, b)
    assert torch.allclose(combine_caption_orders(a[0], b[0]), batch[0])
    nested = combine_caption_orders(a[:, None], b[:, None])
    assert nested.shape == (2, 1, 2) and torch.allclose(nested[:, 0], batch)
    # row 1: (1, 0) + (0, 1) -> (0.5, 0.5) -> (1, 1) / sqrt(2)
    assert batch[1].tolist() == pytest.approx([2**-0.5, 2**-0.5])


# ------------------------------------------------------------- index arguments and input errors


def test_errors_name_the_problem():
    s = row(0.9, 0.8, 0.7)
    with pytest.raises(ZsbenchError, match="also excluded"):
        target_ranks(s, [1], exclude=[1])
    with pytest.raises(ZsbenchError, match="not among its image-set members"):
        subset_ranks(s, [2], [[0, 1]], [0])
    with pytest.raises(ZsbenchError, match="no ground truth"):
        ap_at_k(s, [[-1, -1]])
    with pytest.raises(ZsbenchError, match="twice"):
        ap_at_k(s, [[1, 1]])
    with pytest.raises(ZsbenchError, match="outside"):
        target_ranks(s, [3])
    with pytest.raises(ZsbenchError, match="NaN"):
        target_ranks(row(0.1, float("nan")), [0])
    with pytest.raises(ZsbenchError, match="integer"):
        target_ranks(s, [1.0])


def test_cir_errors_name_the_wrong_count_or_argument():
    """The CIR input errors say what is wrong, with the count or the argument's name."""
    s = f64([0.9, 0.8, 0.7])
    with pytest.raises(ZsbenchError, match=r"exclude must have one row per query \(1\)"):
        target_ranks(s, [0], exclude=[[1], [2]])
    with pytest.raises(ZsbenchError, match="^gt lists a gallery item twice"):
        ap_at_k(s, [[1, 1]])
    with pytest.raises(ZsbenchError, match="^target and members must have one row per query"):
        subset_ranks(s, [0], [[0, 1], [0, 2]])
    with pytest.raises(ZsbenchError, match="^no queries to score"):
        recall_from_ranks(torch.zeros(0), (1,))
    msg = r"reference must hold integer gallery indices, got dtype torch\.float64"
    with pytest.raises(ZsbenchError, match=msg):
        cirr_metrics(s, [0], [1.0], [[0, 1]])
    msg = r"members must have 2 dimension\(s\), got shape \(2,\)"
    with pytest.raises(ZsbenchError, match=msg):
        cirr_metrics(s, [0], [1], [0, 1])


# every index argument of every public CIR function, given floats: the message names it
_FLOAT = [0.0]
_BAD_INDEX_ARGS = [
    ("target", lambda s: target_ranks(s, _FLOAT)),
    ("target", lambda s: subset_ranks(s, _FLOAT, [[0]])),
    ("members", lambda s: subset_ranks(s, [0], [_FLOAT])),
    ("reference", lambda s: subset_ranks(s, [0], [[0]], _FLOAT)),
    ("gt", lambda s: ap_at_k(s, [_FLOAT])),
    ("exclude", lambda s: ap_at_k(s, [[0]], exclude=_FLOAT)),
    ("exclude", lambda s: target_ranks(s, [0], exclude=[[-1.0]])),
    ("target", lambda s: fashioniq_metrics(s, _FLOAT)),
    ("target", lambda s: cirr_metrics(s, _FLOAT, [1], [[0, 1]])),
    ("members", lambda s: cirr_metrics(s, [0], [1], [_FLOAT])),
    ("gt", lambda s: circo_metrics(s, [_FLOAT])),
    ("target", lambda s: circo_metrics(s, [[0]], target=_FLOAT)),
]


@pytest.mark.parametrize("name, call", _BAD_INDEX_ARGS)
def test_cir_index_errors_name_the_argument(name, call):
    """Every index argument of every public CIR function, given floats: the error names it."""
    msg = rf"{name} must hold integer gallery indices, got dtype torch\.float64"
    with pytest.raises(ZsbenchError, match=msg):
        call(f64([0.9, 0.8, 0.7]))


def test_cir_range_errors_name_the_argument():
    """An index outside [-1, G - 1]: the error names the argument and its min and max."""
    s = f64([0.9, 0.8, 0.7])
    msg = r"{} holds gallery indices outside \[-1, 2\] \(min {}, max {}\)"
    with pytest.raises(ZsbenchError, match=msg.format("exclude", 0, 5)):
        target_ranks(s, [1], exclude=[[0, 5]])
    with pytest.raises(ZsbenchError, match=msg.format("exclude", -2, -2)):
        ap_at_k(s, [[0]], exclude=[-2])


def test_index_tensor_accepts_array_likes():
    """Anything numpy turns into an integer array is accepted (here: an __array__ object)."""

    class ArrayLike:
        def __array__(self, dtype=None, copy=None):
            return np.array([2, 0])

    assert index_tensor(ArrayLike(), "target", 1).tolist() == [2, 0]
    # the same for the excluded items, one per query: item 2 for query 0, item 0 for query 1
    s = f64([0.5, 0.6, 0.7], [0.9, 0.6, 0.7])
    assert target_ranks(s, [1, 2]).tolist() == [2, 2]
    assert target_ranks(s, [1, 2], exclude=ArrayLike()).tolist() == [1, 1]
    assert index_tensor([np.array(1), np.array(2)], "target", 1).tolist() == [1, 2]


def test_index_tensor_returns_int64_whatever_the_integer_dtype():
    """Indices of any integer dtype become int64; a bfloat16 tensor is refused by its dtype."""
    for dtype in (np.int8, np.int32, np.uint8):
        assert index_tensor(np.array([1, 2], dtype=dtype), "target", 1).dtype == torch.int64
    # a bfloat16 tensor is rejected by its dtype (numpy cannot even hold bfloat16)
    msg = r"target must hold integer gallery indices, got dtype torch\.bfloat16"
    with pytest.raises(ZsbenchError, match=msg):
        index_tensor(torch.tensor([1.0], dtype=torch.bfloat16), "target", 1)
    msg = r"exclude must hold integer gallery indices, got dtype torch\.bfloat16"
    with pytest.raises(ZsbenchError, match=msg):
        target_ranks(f64([0.9, 0.8]), [0], exclude=torch.tensor([1.0], dtype=torch.bfloat16))


_S1 = f64([0.9, 0.8, 0.7])  # one query, G = 3
_S2 = f64([0.9, 0.8, 0.7], [0.7, 0.8, 0.9])  # two queries, G = 3
_T0, _NONE = torch.tensor([0]), torch.tensor([-1])

# each input error of zsbench.metrics.cir: (call, the fragment its message must hold: the
# argument, the bad value and the fix)
_CIR_ERRORS = {
    "cir-float-index": (
        lambda: target_ranks(_S1, [1.0]),
        r"target must hold integer gallery indices, got dtype torch\.float64",
    ),
    "cir-bool-index": (
        lambda: ap_at_k(_S1, [[True]]),
        r"gt must hold integer gallery indices, got dtype torch\.bool",
    ),
    "cir-index-ndim": (
        lambda: target_ranks(_S1, [[0]]),
        r"target must have 1 dimension\(s\), got shape \(1, 1\)",
    ),
    "cir-scores-ndim": (
        lambda: target_ranks(np.zeros(3), [0]),
        r"scores must be \[queries, gallery\], got shape \(3,\)",
    ),
    "cir-range-high": (
        lambda: target_ranks(_S1, [3]),
        r"target holds gallery indices outside \[-1, 2\] \(min 3, max 3\)",
    ),
    "cir-range-gt": (
        lambda: ap_at_k(_S1, [[3]]),
        r"gt holds gallery indices outside \[-1, 2\] \(min 3, max 3\)",
    ),
    "cir-range-low": (
        lambda: subset_ranks(_S1, [0], [[0, -2]]),
        r"members holds gallery indices outside \[-1, 2\] \(min -2, max 0\)",
    ),
    "cir-nan": (
        lambda: target_ranks(f64([0.1, math.nan]), [0]),
        r"^scores contain NaN or inf; fix the features",
    ),
    "cir-target-negative": (
        lambda: target_ranks(_S1, [-1]),
        r"target must give one gallery index >= 0 per query \(1\)",
    ),
    "cir-target-count": (
        lambda: target_ranks(_S1, [0, 1]),
        r"target must give one gallery index >= 0 per query \(1\)",
    ),
    "cir-target-excluded": (
        lambda: target_ranks(_S2, [0, 1], exclude=[2, 1]),
        r"query 1: its target is also excluded from the gallery",
    ),
    "cir-not-member": (
        lambda: subset_ranks(_S2, [0, 2], [[0, 1], [0, 1]]),
        r"query 1: the target is not among its image-set members",
    ),
    "cir-target-is-reference": (
        lambda: subset_ranks(_S1, [1], [[0, 1]], [1]),
        r"query 0: the target is not among its image-set members",
    ),
    "cir-gt-rows": (
        lambda: ap_at_k(_S1, [[0], [1]]),
        r"gt must have one row per query \(1\), got 2",
    ),
    "cir-no-gt": (
        lambda: ap_at_k(_S2, [[0], [-1]]),
        r"query 1 has no ground truth; CIRCO's AP@k needs at least one",
    ),
    "cir-gt-excluded": (
        lambda: ap_at_k(_S1, [[0, 1]], exclude=[1]),
        r"^a ground truth is also excluded from the gallery",
    ),
    "cir-fiq-mean-empty": (
        lambda: fashioniq_mean({}),
        r"^fashioniq_mean needs at least one category",
    ),
    "cir-fiq-mean-keys": (
        lambda: fashioniq_mean({"dress": {"R@10": 0.1, "R@50": 0.2}, "shirt": {"R@10": 0.1}}),
        r"category 'shirt' has metrics \['R@10'\], expected \['R@10', 'R@50'\]",
    ),
    "cir-protocol": (
        lambda: CIRLabels("cir", _T0, _NONE),
        r"unknown CIR protocol 'cir'; one of \('fashioniq', 'cirr', 'circo'\)",
    ),
    "cir-cirr-members": (
        lambda: CIRLabels("cirr", _T0, _NONE),
        r"^the cirr protocol needs members \(each query's img_set\)",
    ),
    "cir-circo-gt": (
        lambda: CIRLabels("circo", _T0, _NONE, members=torch.tensor([[0]])),
        r"^the circo protocol needs gt \(each query's ground truths\)",
    ),
    "cir-rows": (
        lambda: cir_metrics(_S2, CIRLabels("fashioniq", _T0, _NONE)),
        r"scores have 2 rows but there are 1 queries",
    ),
    "cir-caption-shapes": (
        lambda: combine_caption_orders(torch.zeros(2, 3), torch.zeros(2, 4)),
        r"caption orders need features of one shape, got \(2, 3\) and \(2, 4\)",
    ),
}


@pytest.mark.parametrize("case", sorted(_CIR_ERRORS))
def test_each_cir_input_error_names_the_problem(case):
    """Each input error of zsbench.metrics.cir is a ZsbenchError naming the argument and value."""
    fn, msg = _CIR_ERRORS[case]
    raises_exactly(ZsbenchError, fn, msg)
