"""Scale-out: a 2-process CPU DDP run (gloo) matches one process; evaluation gathers ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zsbench.datamodules.base import Item, SBIRDataModule
from zsbench.methods.base import RetrievalMethod
from zsbench.runner import embed_partition
from zsbench.runner.common import _planned_world_size
from zsbench.splits import split_from_unseen


def _bench(tmp_path, name: str, extra: list[str]) -> dict:
    results = tmp_path / name
    cmd = [sys.executable, "-m", "zsbench.cli", "bench", "--method", "supervised"]
    cmd += ["--results-dir", str(results), "--no-progress", "--quiet", *extra]
    cmd += ["--set", "trainer.accelerator=cpu", "--set", "trainer.max_epochs=10"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (path,) = [p for p in results.rglob("seed0.json")]
    return json.loads(path.read_text())


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    one = _bench(tmp_path, "one", [])
    two = _bench(tmp_path, "two", ["--set", "trainer.devices=2", "--set", "trainer.strategy=ddp"])
    assert (one["world_size"], two["world_size"]) == (1, 2)
    # the gathered evaluation saw every query and gallery item exactly once
    assert (two["n_queries"], two["n_gallery"]) == (one["n_queries"], one["n_gallery"])
    # same global batch, different shuffling across ranks: equal within tolerance
    for key in ("mAP@all", "P@100"):
        assert abs(two["metrics"][key] - one["metrics"][key]) < 0.03, key
    assert two["metrics"]["mAP@all"] > 2 * two["chance"]["mAP@all"]


class _FeatureData(SBIRDataModule):
    """Five classes (three unseen: 21 queries, an uneven share per rank), fake paths, random
    features: no files are read."""

    def scan(self) -> list[Item]:
        return [
            Item(f"/fake/{c}/{d}{i}.png", f"c{c}", d) for c in range(5) for d in (0, 1)
            for i in range(7)
        ]  # fmt: skip

    def make_split(self, classes):
        return split_from_unseen("fake", classes, ["c2", "c3", "c4"])


def feature_datamodule() -> _FeatureData:
    dm = _FeatureData()
    dm.setup()
    dm.use_features(np.random.default_rng(0).normal(size=(len(dm.items), 6)).astype("float32"))
    dm.eval_batch_size = 4  # several batches per rank
    return dm


class _Rows(RetrievalMethod):
    """Stands in for a method: its embedding is the item's feature row."""

    seen = 0  # rows this process embedded itself

    def encode_query(self, batch):
        self.seen += len(batch["feature"])
        return batch["feature"]

    encode_gallery = encode_query


def _gather_worker(rank: int, world: int, port: int, out):
    # what Lightning's launcher (or torchrun) gives each process, so no process is relaunched
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK="0",
                      LOCAL_RANK=str(rank), RANK=str(rank), WORLD_SIZE=str(world))  # fmt: skip
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        dm = feature_datamodule()
        tcfg = {"accelerator": "cpu", "devices": world, "num_nodes": 1, "strategy": "ddp"}
        model = _Rows()
        z, y = embed_partition(model, dm, "query", "query", tcfg)
        out[rank] = (z.clone(), y.clone(), model.seen)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_embeddings_equal_single_process_order():
    """Trainer.predict under DDP: each rank embeds its uneven share (11 / 10 queries) and every
    rank gets the whole partition back in partition order, equal to one process's."""
    dm = feature_datamodule()
    single = embed_partition(_Rows(), dm, "query", "query")
    rows = torch.as_tensor(dm.features[dm.partitions["query"]])
    assert len(single[0]) == 21 and torch.equal(single[0], rows)
    manager = mp.Manager()
    out = manager.dict()
    port = 29500 + os.getpid() % 1000
    mp.spawn(_gather_worker, args=(2, port, out), nprocs=2, join=True)
    assert sorted(out[rank][2] for rank in (0, 1)) == [10, 11]  # each rank only its share
    for rank in (0, 1):
        z, y, _ = out[rank]
        assert torch.equal(z, single[0]) and torch.equal(y, single[1])


def test_planned_world_size():
    base = {"strategy": "ddp", "devices": 2, "num_nodes": 3}
    assert _planned_world_size(base) == 6
    assert _planned_world_size({**base, "strategy": "auto"}) == 1
    assert _planned_world_size({**base, "devices": "auto"}) == 1
    assert _planned_world_size({**base, "devices": [0, 1], "num_nodes": 1}) == 2
