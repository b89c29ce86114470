"""The authors' released weights and data files load as they ship (issue 26): Pic2Word's
{"state_dict_img2text": {"module.…"}}, SEARLE's and LinCIR's {"Phi": …}, RTD's phi, and RTD's
LLM_triplets.json with its `conditioning_caption` key. Each test writes a file in the official
layout (tiny shapes, the same keys) and loads it."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import one_result
from test_cir_bench import TINY_CIR, cir_bench_args

from zsbench.cli import main
from zsbench.errors import ZsbenchError
from zsbench.methods.lincir import Lincir
from zsbench.methods.pic2word import Pic2Word
from zsbench.methods.searle import Searle


def random_state(module: torch.nn.Module) -> dict:
    torch.manual_seed(3)
    return {k: torch.randn_like(v) for k, v in module.state_dict().items()}


def assert_loaded_and_frozen(phi: torch.nn.Module, state: dict) -> None:
    assert all(torch.equal(v, phi.state_dict()[k]) for k, v in state.items())
    assert not any(p.requires_grad for p in phi.parameters())


def test_pic2word_official_img2text_with_ddp_prefix(tmp_path):
    state = random_state(Pic2Word(clip="tiny").phi)
    # official main.py saves the DDP-wrapped IM2TEXT: every key starts with "module."
    torch.save({"epoch": 30, "state_dict_img2text": {f"module.{k}": v for k, v in state.items()}},
               tmp_path / "pic2word_model.pt")  # fmt: skip
    model = Pic2Word(clip="tiny", checkpoint=str(tmp_path / "pic2word_model.pt"))
    assert_loaded_and_frozen(model.phi, state)
    torch.save({"state_dict_img2text": state}, tmp_path / "plain.pt")  # without DDP
    plain = Pic2Word(clip="tiny", checkpoint=str(tmp_path / "plain.pt"))
    assert_loaded_and_frozen(plain.phi, state)


@pytest.mark.parametrize("cls", [Searle, Lincir], ids=["searle", "lincir"])
def test_searle_and_lincir_official_phi(cls, tmp_path):
    extra = {"concepts": ["red", "circle"]} if cls is Searle else {}
    state = random_state(cls(clip="tiny", **extra).phi)
    torch.save({"epoch": 100, "Phi": state}, tmp_path / "phi_last.pt")  # official save_phi
    model = cls(clip="tiny", checkpoint=str(tmp_path / "phi_last.pt"), **extra)
    assert_loaded_and_frozen(model.phi, state)
    assert model.loaded_checkpoint == str(tmp_path / "phi_last.pt")


def test_a_checkpoint_of_another_shape_or_layout_fails_clearly(tmp_path):
    torch.save({"state_dict_img2text": {"module.fc_out.weight": torch.zeros(2, 2)}}, tmp_path / "a")
    with pytest.raises(ZsbenchError, match="does not fit this phi"):
        Pic2Word(clip="tiny", checkpoint=str(tmp_path / "a"))
    torch.save({"optimizer": {}}, tmp_path / "b")
    with pytest.raises(ZsbenchError, match="holds no phi weights"):
        Lincir(clip="tiny", checkpoint=str(tmp_path / "b"))
    with pytest.raises(ZsbenchError, match="does not exist"):
        Lincir(clip="tiny", checkpoint=str(tmp_path / "missing.pt"))


def test_bench_with_a_released_checkpoint_scores_it_without_training(tmp_path):
    state = random_state(Lincir(clip="tiny").phi)
    torch.save({"Phi": state}, tmp_path / "lincir.pt")
    args = cir_bench_args(tmp_path / "r", TINY_CIR, "lincir", "--quiet",
                          "--set", f"model.checkpoint={tmp_path / 'lincir.pt'}")  # fmt: skip
    assert main(args) == 0
    rec = json.loads(one_result(tmp_path / "r", "lincir").read_text())
    assert rec["weights"] == {"loaded_from": str(tmp_path / "lincir.pt"), "released": True}
    assert rec["timings"]["train_s"] < 1.0  # nothing trained
    assert rec["variant"] != "default"  # a config of its own


def test_rtd_phi_checkpoint_is_frozen(tmp_path):
    from zsbench.methods.rtd import LincirRtd

    state = random_state(Lincir(clip="tiny").phi)
    torch.save({"Phi": state}, tmp_path / "phi.pt")
    model = LincirRtd(clip="tiny", phi_checkpoint=str(tmp_path / "phi.pt"))
    assert model.phi_ready
    assert_loaded_and_frozen(model.base.phi, state)
    via_base = LincirRtd(clip="tiny", base_args={"checkpoint": str(tmp_path / "phi.pt")})
    assert via_base.phi_ready  # the base's released phi is stage 1


def test_rtd_official_triplet_file_with_conditioning_caption(tmp_path):
    from zsbench.datamodules.cir_training_files import read_triplets

    rows = [
        {
            "reference_caption": "a dog",
            "conditioning_caption": "make it a cat",
            "target_caption": "a cat",
            "id": 1,
        },  # fmt: skip
    ]
    path = tmp_path / "LLM_triplets.json"
    path.write_text(json.dumps(rows))
    assert read_triplets(path) == [
        {"reference_caption": "a dog", "modification": "make it a cat", "target_caption": "a cat"}
    ]
    path.write_text(json.dumps([{"reference_caption": "a dog", "target_caption": "a cat"}]))
    with pytest.raises(ZsbenchError, match="or conditioning_caption for modification"):
        read_triplets(path)
