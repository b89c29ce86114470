"""ZS-CIR in the benchmark: the method contract, the datamodules, the runner's CIR branch, the
pseudo-token text encoding, and the leaderboard's CIR rows."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import one_result

from zsbench.chance import cir_chance
from zsbench.cli import main
from zsbench.clip import (
    encode_prompts,
    encode_with_pseudo_tokens,
    load_clip,
    placeholder_token_id,
    tokenize,
)
from zsbench.datamodules.cir_training_files import read_captions, read_triplets
from zsbench.datamodules.cirr import CIRR
from zsbench.datamodules.fashioniq import FashionIQ
from zsbench.datamodules.synthetic_cir import SyntheticCIR
from zsbench.errors import ZsbenchError
from zsbench.leaderboard import build_leaderboard, format_table
from zsbench.methods.base import CIRMethod, MethodMetadata
from zsbench.metrics.cir import CIRLabels, ap_at_k
from zsbench.results import extras_path
from zsbench.runner import bench

# A synthetic CIR dataset small enough for a CPU test run in seconds (36 combinations, 2 scenes;
# test: ~11 combinations, ~22 queries). Method YAMLs add clip=tiny and image_size=64.
TINY_CIR = [
    "dataset.n_shapes=3",
    "dataset.n_colours=3",
    "dataset.n_patterns=2",
    "dataset.instances=2",
    "dataset.test_fraction=0.3",
    "dataset.n_text_triplets=64",
    "trainer.max_epochs=1",
    "trainer.batch_size=16",
]
TINY_KW = dict(
    n_shapes=3, n_colours=3, n_patterns=2, instances=2, test_fraction=0.3, n_text_triplets=64
)


def cir_bench_args(results, overrides, method="pic2word", *extra):
    args = ["bench", "--method", method, "--dataset", "synthetic-cir"]
    args += ["--results-dir", str(results), "--no-progress"]
    for o in overrides:
        args += ["--set", o]
    return [*args, *extra]


@pytest.fixture(scope="module")
def clip():
    return load_clip("tiny")


@pytest.fixture(scope="module")
def tiny_dm():
    dm = SyntheticCIR(**TINY_KW, image_size=64)
    dm.setup()
    return dm


# --------------------------------------------------------------------------- contract


def test_cir_method_contract_is_checked_when_the_class_is_defined():
    meta = dict(paper="p", year=None, code=None, backbone="b", side_information=None)
    with pytest.raises(ZsbenchError, match="trains=False but train_on='images'"):

        class Bad(CIRMethod):  # noqa: F841
            metadata = MethodMetadata("x", "cir", "images", False, **meta)
            train_on = "images"

    with pytest.raises(ZsbenchError, match="task='sbir'"):

        class Sbir(CIRMethod):  # noqa: F841
            metadata = MethodMetadata("x", "sbir", "images", False, **meta)

    with pytest.raises(ZsbenchError, match="train_on='pairs'"):

        class Pairs(CIRMethod):  # noqa: F841
            train_on = "pairs"


class _Echo(CIRMethod):
    """Query = a fixed text-dependent vector, to check how embed() combines caption orders."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[str]] = []

    def encode_query(self, batch):
        self.seen.append(list(batch["text"]))
        return torch.stack([torch.tensor([1.0, 0.0]) if t == "a" else torch.tensor([0.0, 3.0])
                            for t in batch["text"]])  # fmt: skip


def test_embed_combines_fashioniq_caption_orders():
    m = _Echo()
    batch = {"reference": torch.zeros(1, 3, 4, 4), "text": ["a"], "text_reversed": ["b"]}
    z, index = m.embed([{**batch, "index": torch.tensor([0])}], "query")
    assert m.seen == [["a"], ["b"]]
    assert torch.allclose(z, F.normalize(torch.tensor([[1.0, 1.0]]), dim=-1))
    assert index.tolist() == [0]


# --------------------------------------------------------------------------- datamodules


def test_synthetic_cir_datamodule_batches_and_training_sources(tiny_dm):
    g = tiny_dm.groups[0]
    n_q, n_g = len(g.data.queries), len(g.data.gallery)
    assert n_q > 5 and n_g > 5 and tiny_dm.split.name == "test"
    assert tiny_dm.manifest()["counts"] == {"query": n_q, "gallery": n_g}
    q = next(iter(tiny_dm.query_dataloader(g)))
    assert q["reference"].shape == (min(n_q, 256), 3, 64, 64) and len(q["text"]) == len(q["index"])
    assert "text_reversed" not in q
    gal = next(iter(tiny_dm.gallery_dataloader(g)))
    assert gal["image"].shape[1:] == (3, 64, 64)
    # training data comes only from training combinations, never the evaluated ones
    images = json.loads((tiny_dm.data_root() / "images.json").read_text())
    train_names = {p.stem for p in tiny_dm.own_train_images()}
    assert train_names and all(images[n]["partition"] == "train" for n in train_names)
    assert train_names.isdisjoint(g.data.gallery)
    test_captions = {images[n]["caption"] for n in g.data.gallery}
    assert test_captions.isdisjoint(tiny_dm.own_train_captions())
    tiny_dm.batch_size = 8
    tb = next(iter(tiny_dm.triplet_train_dataloader()))
    assert set(tb) == {"reference_caption", "modification", "target_caption"}
    assert len(tb["modification"]) == 8 and isinstance(tb["modification"][0], str)
    assert next(iter(tiny_dm.caption_train_dataloader()))["text"][0].startswith("a ")
    assert next(iter(tiny_dm.image_train_dataloader()))["image"].shape == (8, 3, 64, 64)
    labels = tiny_dm.labels(g)
    assert labels.protocol == "circo" and labels.gt.shape[1] == 2  # 2 scenes: 2 ground truths


def test_max_train_items_caps_training_data():
    dm = SyntheticCIR(**TINY_KW, max_train_items=5)
    dm.setup()
    assert dm.train_size("images") == dm.train_size("captions") == 5


def test_real_datasets_read_annotations_and_name_missing_pieces(shared_data, tmp_path):
    cir = shared_data / "cir"
    dm = CIRR(root=str(cir))
    dm.setup()
    assert dm.manifest()["counts"] == {"query": 4181, "gallery": 2297}
    with pytest.raises(ZsbenchError, match="dev/<name>.png"):
        next(iter(dm.gallery_dataloader(dm.groups[0])))
    with pytest.raises(ZsbenchError, match="dataset.train_images"):
        dm.image_train_dataloader()
    fiq = FashionIQ(root=str(cir), categories="dress,toptee")
    fiq.setup()
    assert [g.name for g in fiq.groups] == ["dress", "toptee"]
    with pytest.raises(ZsbenchError, match="categories"):
        FashionIQ(root=str(cir), categories="dress,hat")
    with pytest.raises(ZsbenchError, match="no cirr annotations"):
        CIRR(root=str(tmp_path)).setup()


def test_real_dataset_without_root_says_how_to_set_it(monkeypatch):
    monkeypatch.delenv("ZSBENCH_DATA", raising=False)
    with pytest.raises(ZsbenchError, match="dataset.root"):
        CIRR().setup()


def test_training_files_are_read_and_checked(tmp_path):
    (tmp_path / "c.txt").write_text("a dog\n\n a cat \n")
    assert read_captions(tmp_path / "c.txt") == ["a dog", "a cat"]
    t = {"reference_caption": "a dog", "modification": "make it a cat", "target_caption": "a cat"}
    (tmp_path / "t.jsonl").write_text(json.dumps(t) + "\n")
    assert read_triplets(tmp_path / "t.jsonl") == [t]
    (tmp_path / "bad.json").write_text(json.dumps([{"reference_caption": "x"}]))
    with pytest.raises(ZsbenchError, match="record 0 needs"):
        read_triplets(tmp_path / "bad.json")
    with pytest.raises(ZsbenchError, match="no such file"):
        read_captions(tmp_path / "missing.txt")


# --------------------------------------------------------------------------- pseudo tokens


def test_pseudo_token_replaces_only_the_placeholder(clip):
    model, tok = clip.model, clip.tokenizer
    width = model.text_model.config.hidden_size
    prompts = ["a photo of $ that is red", "a photo of $"]
    torch.manual_seed(0)
    v = torch.randn(2, width)
    a = encode_with_pseudo_tokens(model, tok, prompts, v)
    b = encode_with_pseudo_tokens(model, tok, prompts, v + torch.randn(2, width))
    assert not torch.allclose(a, b)  # the injected vector matters
    # injecting the embedding of the word "x" equals encoding the text with "x" in its place
    x_id = tok("x")["input_ids"][1]
    x_vec = model.text_model.embeddings.token_embedding.weight[x_id].expand(2, -1)
    injected = encode_with_pseudo_tokens(model, tok, prompts, x_vec)
    plain = encode_prompts(model, tok, [p.replace("$", "x") for p in prompts])
    assert torch.allclose(injected, plain, atol=1e-5)
    # gradients reach the tokens (CLIP itself is frozen)
    v.requires_grad_(True)
    encode_with_pseudo_tokens(model, tok, prompts, v).sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0


def test_pseudo_token_errors(clip):
    model, tok = clip.model, clip.tokenizer
    width = model.text_model.config.hidden_size
    with pytest.raises(ZsbenchError, match="exactly once"):
        encode_with_pseudo_tokens(model, tok, ["a photo"], torch.zeros(1, width))
    with pytest.raises(ZsbenchError, match="exactly once"):
        encode_with_pseudo_tokens(model, tok, ["$ and $"], torch.zeros(1, width))
    with pytest.raises(ZsbenchError, match="width"):
        encode_with_pseudo_tokens(model, tok, ["a $"], torch.zeros(1, width + 1))
    with pytest.raises(ZsbenchError, match="tokens must be"):
        encode_with_pseudo_tokens(model, tok, ["a $", "b $"], torch.zeros(1, width))
    assert placeholder_token_id(tok, "$") != placeholder_token_id(tok, "*")
    ids, eos = tokenize(tok, ["a", "a longer text"])
    assert (ids[torch.arange(2), eos] == tok.eos_token_id).all() and eos[0] < eos[1]


# --------------------------------------------------------------------------- runner


def test_cir_chance_matches_random_rankings():
    """The closed-form chance level equals the mean over many random score matrices."""
    g = torch.tensor([[0, 3, -1], [5, -1, -1], [1, 2, 4]])
    labels = CIRLabels("circo", g[:, 0], torch.tensor([6, 7, -1]), gt=g)
    exact = cir_chance(labels, n_gallery=10)
    gen = torch.Generator().manual_seed(0)
    sims = [ap_at_k(torch.rand(3, 10, generator=gen), g, ks=(5, 10)) for _ in range(4000)]
    for k in (5, 10):
        mc = torch.stack([s[k] for s in sims]).mean()
        assert abs(float(mc) - exact[f"mAP@{k}"]) < 0.01
    assert exact["R@5"] == pytest.approx(0.5)
    cirr = CIRLabels(
        "cirr", torch.tensor([1]), torch.tensor([0]), members=torch.tensor([[0, 1, 2, 3, 4, 5]])
    )
    c = cir_chance(cirr, n_gallery=11)  # reference removed: 10 candidates, 5 in the subset
    assert c["R@1"] == pytest.approx(0.1) and c["R_subset@2"] == pytest.approx(0.4)


def test_sbir_eval_options_on_a_cir_run_are_errors_before_any_data_is_read(tmp_path):
    from zsbench.runner import plan_run

    for option, fragment in (
        ("eval.spec=sake", "eval.spec='sake' is an SBIR spec"),
        ("eval.also_specs=[sake]", "eval.also_specs is for SBIR runs"),
    ):
        with pytest.raises(ZsbenchError, match=fragment):
            plan_run("pic2word", "synthetic-cir", 0, [*TINY_CIR, option], tmp_path)
    assert not list(tmp_path.iterdir())


def test_pic2word_fast_dev_run_through_the_cli(tmp_path):
    args = cir_bench_args(tmp_path, TINY_CIR, "pic2word", "--set", "trainer.fast_dev_run=true")
    assert main(args) == 0
    path = one_result(tmp_path, "pic2word")
    rec = json.loads(path.read_text())
    assert rec["status"] == "fast_dev_run" and rec["task"] == "cir"


def test_pic2word_run_writes_cir_result_extras_and_leaderboard_row(tmp_path):
    assert main(cir_bench_args(tmp_path, TINY_CIR, "pic2word")) == 0
    path = one_result(tmp_path, "pic2word")
    rec = json.loads(path.read_text())
    assert rec["status"] == "ok" and rec["spec"]["name"] == "circo"
    assert rec["spec"]["ties"] == "expected" and rec["spec"]["version"]  # eval.ties, recorded
    m = rec["metrics"]
    assert list(rec["spec"]["metrics"]) == list(m) and rec["n_queries_without_positive"] == 0
    assert set(m) == {f"mAP@{k}" for k in (5, 10, 25, 50)} | {f"R@{k}" for k in (5, 10, 25, 50)}
    assert m["R@50"] >= m["R@25"] >= m["R@10"] >= m["R@5"]
    assert rec["n_queries"] == rec["split_manifest"]["counts"]["query"] > 0
    assert rec["backbone"]["pretrained_on"] == "random" and rec["n_train_items"] > 0
    extras = json.loads(extras_path(path).read_text())
    ex = extras["examples"][0]
    assert ex["query"].endswith(".png") and ex["label"] and len(ex["top"]) == 10
    assert any(isinstance(t["correct"], bool) for t in ex["top"])
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    row = board[(board.method == "pic2word") & (board.task == "cir")]
    assert len(row) == 1 and row["spec"].iloc[0] == "circo"
    assert row["mAP@5"].iloc[0] == pytest.approx(m["mAP@5"])
    cols = [c for c in board.columns if c in m]
    assert cols.index("mAP@5") < cols.index("R@5")  # the headline metric first


def test_leaderboard_orders_each_task_by_its_own_headline_metric():
    def rec(task, ds, method, metrics, spec):
        return {"task": task, "dataset": ds, "split": "s", "method": method, "seed": 0,
                "status": "ok", "metrics": metrics, "spec": {"name": spec}}  # fmt: skip

    df = build_leaderboard(
        [
            rec("cir", "cirr", "a", {"R@1": 0.1, "R_subset@1": 0.9}, "cirr"),
            rec("cir", "cirr", "b", {"R@1": 0.3, "R_subset@1": 0.2}, "cirr"),
            rec("sbir", "synthetic", "c", {"mAP@all": 0.5, "P@100": 0.1}, "default"),
        ]
    )
    assert df[df.task == "cir"].method.tolist() == ["b", "a"]  # by R@1, not R_subset@1
    table = format_table(df, max_metrics=1)
    assert "mAP@all" in table and "R@1" in table and "R_subset@1" not in table


def test_unreadable_training_image_is_an_error_or_skipped_and_counted(tmp_path):
    """A broken training image stops the run with the fix named; with dataset.skip_bad=true
    it is skipped, the next image served, and the result counts it."""
    cache = tmp_path / "data"
    dm = SyntheticCIR(**TINY_KW, cache=str(cache))
    broken = dm.own_train_images()[2]
    broken.write_bytes(b"not a png")
    base = [*TINY_CIR, f"dataset.cache={cache}"]
    with pytest.raises(ZsbenchError, match="dataset.skip_bad=true"):
        bench("pic2word", "synthetic-cir", 0, base, results=tmp_path / "a", progress=False)
    out = bench("pic2word", "synthetic-cir", 0, [*base, "dataset.skip_bad=true"],
                results=tmp_path / "b", progress=False)  # fmt: skip
    rec = json.loads(out.path.read_text())
    assert rec["status"] == "ok"
    assert rec["split_manifest"]["n_skipped_bad"] == 1
    assert rec["split_manifest"]["skipped_bad"] == [str(broken)]
