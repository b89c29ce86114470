"""Published numbers as data (zsbench/reported): the packaged files name only registered methods,
known splits, specs and metrics; the validator rejects bad entries; the leaderboard and the HTML
report show them as marked rows beside matching measured rows only, without touching those."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from zsbench.cli import main
from zsbench.leaderboard import (
    REPORTED_CSV,
    build_leaderboard,
    format_table,
    is_reported,
    update_leaderboard,
)
from zsbench.report import Run, render_report, write_report
from zsbench.reported import (
    FILES,
    HERE,
    OWN_SPLIT,
    KnownNames,
    ReportedError,
    check_known,
    data_files,
    known_names,
    load_reported,
    parse_document,
)
from zsbench.results import SCHEMA_VERSION, result_path, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]


def manifest_names() -> set[str]:
    """The SBIR split names shipped with the datasets (datamodules/splits/*.json)."""
    return {json.loads(p.read_text())["name"] for p in (ROOT / "datamodules/splits").glob("*.json")}


@pytest.fixture(scope="module")
def known() -> KnownNames:
    return known_names(manifest_names())


# ---------------------------------------------------------------------------- the data files


def test_packaged_files_name_registered_methods_known_splits_specs_and_metrics(known):
    records = load_reported()
    check_known(records, known)  # raises with every offending entry listed
    assert {r.task for r in records} <= {"sbir", "cir"}
    for r in records:
        assert 0.0 <= r.value <= 1.0, r.where  # fractions, as zsbench's results
        assert r.split != OWN_SPLIT or r.split_note, r.where
        assert r.source["authors"] and r.source["venue"] and r.source["year"] > 2000, r.where
        assert r.backbone and r.training_data, r.where
        assert r.source_label().startswith("reported: ")
    # the CIR file holds numbers of CIR methods only (and the SBIR file of SBIR methods)
    assert {r.task for r in records if r.method in ("lincir",)} <= {"cir"}


def test_data_files_are_packaged():
    """The YAML files sit in an installed package and are package data (setuptools lists
    packages explicitly, see tests/test_architecture.py)."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "zsbench.reported" in setuptools["packages"]
    assert "*.yaml" in setuptools["package-data"]["zsbench.reported"]
    assert [p.name for p in data_files()] == list(FILES)
    assert all((HERE / name).is_file() for name in FILES)
    for path in data_files():
        data = yaml.safe_load(path.read_text())
        assert data["task"] == path.stem  # sbir.yaml holds SBIR numbers, cir.yaml CIR ones


def test_the_lincir_numbers_are_the_papers_as_read():
    """Spot checks against the source (the first author's table in navervision/lincir#8)."""
    by = {(r.dataset, r.metric): r for r in load_reported() if r.method == "lincir"}
    assert by[("circo", "mAP@5")].value == pytest.approx(0.1259)
    assert by[("cirr", "R@1")].value == pytest.approx(0.2504)
    assert by[("cirr", "R_subset@3")].value == pytest.approx(0.8889)
    assert by[("fashioniq", "mean/R@10")].value == pytest.approx(0.2628)
    cats = [by[("fashioniq", f"{c}/R@10")].value for c in ("dress", "shirt", "toptee")]
    assert sum(cats) / 3 == pytest.approx(0.2628, abs=1e-4)  # the mean of the categories
    assert "lincir/issues/8" in by[("cirr", "R@1")].read_from


# ---------------------------------------------------------------------------- the validator

GOOD = {
    "method": "cvae",
    "dataset": "sketchy",
    "split": "sketchy21",
    "spec": "yelamarthi",
    "metrics": {"mAP@200": 0.2, "P@200": 0.3},
    "backbone": "VGG-16 (ImageNet)",
    "training_data": "Sketchy 104 seen classes, full",
    "source": {"authors": "A et al.", "title": "T", "venue": "V", "year": 2018},
}


def doc(task="sbir", **changes) -> dict:
    entry = {**GOOD, **changes}
    return {"schema": 1, "task": task, "entries": [{k: v for k, v in entry.items() if v != ...}]}


def test_a_good_entry_gives_one_record_per_number(known):
    records = parse_document(doc(), "t.yaml")
    assert [(r.metric, r.value) for r in records] == [("mAP@200", 0.2), ("P@200", 0.3)]
    check_known(records, known)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"metrics": {"mAP@200": 22.5}}, "outside [0, 1]"),  # a percentage
        ({"metrics": {"mAP@200": True}}, "must be a number"),
        ({"metrics": {}}, "non-empty mapping"),
        ({"split": "own"}, "needs a split_note"),
        ({"backbon": "VGG"}, "unknown field 'backbon'. Did you mean: backbone"),
        ({"source": ...}, "missing field(s) ['source']"),
        ({"source": {"authors": "A", "title": "T", "venue": "V"}}, "source: missing"),
        ({"source": {**GOOD["source"], "year": "2018"}}, "source.year"),
        ({"image_size": -3}, "image_size"),
        ({"backbone": ""}, "'backbone' must be a non-empty string"),
    ],
)
def test_schema_errors_name_the_file_entry_and_field(changes, message):
    with pytest.raises(ReportedError, match=r"t\.yaml entry 0 \(cvae\)") as err:
        parse_document(doc(**changes), "t.yaml")
    assert message in str(err.value)


@pytest.mark.parametrize(
    "task, changes, message",
    [
        ("sbir", {"method": "cvea"}, "method 'cvea' is not registered. Did you mean: cvae"),
        ("sbir", {"method": "lincir"}, "is a cir method"),
        ("sbir", {"split": "sketchy22"}, "split 'sketchy22' is not a known sbir split"),
        ("sbir", {"spec": "yelamarti"}, "spec 'yelamarti' is not a sbir metric spec"),
        ("sbir", {"metrics": {"mAP@all": 0.3}}, "spec 'yelamarthi' has no metric 'mAP@all'"),
        ("cir", {"method": "lincir", "split": "val", "spec": "cirr"}, "has no metric"),
        ("cir", {"method": "lincir", "split": "train", "spec": "cirr",
                 "metrics": {"R@1": 0.2}}, "split 'train' is not a known cir split"),
    ],
)  # fmt: skip
def test_unknown_names_are_rejected(known, task, changes, message):
    records = parse_document(doc(task, **changes), "t.yaml")
    with pytest.raises(ReportedError, match="t.yaml entry 0") as err:
        check_known(records, known)
    assert message in str(err.value)


def test_own_split_with_a_note_and_other_documents(known):
    records = parse_document(doc(split="own", split_note="random 25 classes, seed 0"), "t")
    check_known(records, known)
    assert "split: random 25 classes" in records[0].setting()
    for bad, message in [
        ([], "expected a mapping"),
        ({"schema": 2, "task": "sbir", "entries": []}, "schema 2"),
        ({"schema": 1, "task": "vqa", "entries": []}, "task must be one of"),
        ({"schema": 1, "task": "sbir", "entries": {}}, "entries must be a list"),
        ({"schema": 1, "task": "sbir", "entries": [], "extra": 1}, "unknown field 'extra'"),
    ]:
        with pytest.raises(ReportedError, match="x.yaml") as err:
            parse_document(bad, "x.yaml")
        assert message in str(err.value)


def test_unreadable_files_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: [1\n")
    with pytest.raises(ReportedError, match="bad.yaml is not valid YAML"):
        load_reported([bad])
    with pytest.raises(ReportedError, match="missing.yaml is unreadable"):
        load_reported([tmp_path / "missing.yaml"])


# ---------------------------------------------------------------------------- the leaderboard


def rec(method, seed, map_all, dataset="sketchy-mini", split="sketchy21", spec="default",
        family="sketchy", task="sbir", metrics=None):  # fmt: skip
    return {
        "schema_version": SCHEMA_VERSION,
        "task": task,
        "dataset": dataset,
        "split": split,
        "method": method,
        "seed": seed,
        "status": "ok",
        "metrics": metrics or {"mAP@all": map_all, "P@100": map_all / 2, "mAP@200": map_all},
        "chance": {"mAP@all": 0.05},
        "spec": {"name": spec},
        "split_manifest": {"name": split, "counts": {"train": 4669}}
        | ({"family": family} if family else {}),
        "backbone": {"name": "efficientnet_lite0"},
        "config": {"dataset": {"image_size": 96}},
    }


RECORDS = [
    *(rec("frozen", s, 0.30 + 0.01 * s) for s in (0, 1)),
    *(rec("cvae", s, 0.35 + 0.01 * s) for s in (0, 1)),
    rec("cvae", 0, 0.2, spec="yelamarthi", metrics={"mAP@200": 0.2, "P@200": 0.25}),
    rec("frozen", 0, 0.25, dataset="synthetic", split="default", family=None),
    rec("cvae", 0, 0.28, dataset="synthetic", split="default", family=None),
    rec("frozen", 0, 0.2, dataset="tuberlin", split="tuberlin30", family=None),
]


def entry(method, split="sketchy21", spec="yelamarthi", metrics=None, dataset="sketchy", **kw):
    return {
        **GOOD,
        "method": method,
        "dataset": dataset,
        "split": split,
        "spec": spec,
        "metrics": metrics or {"mAP@200": 0.225, "P@200": 0.333},
        **kw,
    }


PUBLISHED = parse_document(
    {
        "schema": 1,
        "task": "sbir",
        "entries": [
            entry("cvae", image_size=224, photos="sketchy-ext"),  # -> sketchy-mini/yelamarthi
            entry("frozen", spec="default", metrics={"mAP@all": 0.9}),  # -> default group
            entry("cvae", split="sketchy25"),  # no measured sketchy25 rows: never shown
            entry("cvae", split="tuberlin30", dataset="tuberlin", spec="sake"),  # other spec
            entry("cvae", split=OWN_SPLIT, split_note="random"),  # own split: never matched
            entry("cvae", dataset="quickdraw"),  # another dataset family
        ],
    },
    "test.yaml",
)


def test_without_reported_numbers_nothing_changes():
    base = build_leaderboard(RECORDS)
    assert "source" not in base
    pd.testing.assert_frame_equal(build_leaderboard(RECORDS, []), base)
    pd.testing.assert_frame_equal(build_leaderboard(RECORDS, None), base)
    unmatched = [p for p in PUBLISHED if p.split != "sketchy21" or p.dataset != "sketchy"]
    pd.testing.assert_frame_equal(build_leaderboard(RECORDS, unmatched), base)
    assert format_table(build_leaderboard(RECORDS, unmatched)) == format_table(base)


def test_reported_rows_sit_beside_matching_groups_only_and_leave_measured_rows_alone():
    base = build_leaderboard(RECORDS)
    board = build_leaderboard(RECORDS, PUBLISHED)
    paper = is_reported(board)
    assert paper.sum() == 2
    # measured rows: the same rows, values, order, `vs frozen` and chance as without them
    measured = board[~paper].drop(columns="source").reset_index(drop=True)
    pd.testing.assert_frame_equal(measured, base[measured.columns], check_dtype=False)
    assert set(board[~paper]["source"]) == {""}

    rows = board[paper].set_index(["spec", "method"])
    cvae = rows.loc[("yelamarthi", "cvae [paper]")]
    # shown under the measured family member's dataset name, on the same split and spec
    assert (cvae["dataset"], cvae["split"], cvae["task"]) == ("sketchy-mini", "sketchy21", "sbir")
    assert cvae["mAP@200"] == pytest.approx(0.225) and cvae["P@200"] == pytest.approx(0.333)
    assert cvae["n_seeds"] == 0 and cvae["seeds"] == ""
    assert math.isnan(cvae["vs frozen"]) and math.isnan(cvae["chance"])
    assert cvae["source"] == "reported: A et al., V 2018"
    notes = cvae["notes"]
    assert "paper: backbone VGG-16 (ImageNet); 224 px; trained on Sketchy 104" in notes
    assert "photos: sketchy-ext" in notes
    assert "-- measured: efficientnet_lite0; 96 px; 4,669 training items; on sketchy-mini" in notes
    assert "|" not in notes  # a Markdown table cell
    assert "differs: backbone, image size, data (the paper used the full sketchy)" in notes
    # a published `frozen` number is not the baseline: the measured gaps are unchanged
    frozen = rows.loc[("default", "frozen [paper]")]
    assert frozen["mAP@all"] == pytest.approx(0.9) and math.isnan(frozen["vs frozen"])
    # each reported row follows the measured rows of its own group
    for i in board.index[paper]:
        above = board.loc[: i - 1]
        group = above[(above["spec"] == board.loc[i, "spec"]) & ~is_reported(above)]
        assert board.loc[i - 1, "spec"] == board.loc[i, "spec"] and len(group) > 0
    assert list(board.columns[-4:]) == ["chance", "vs frozen", "vs centred", "source"]


def test_format_table_marks_reported_rows():
    table = format_table(build_leaderboard(RECORDS, PUBLISHED))
    head, *lines = table.splitlines()
    assert "source" in head
    (line,) = [x for x in lines if "cvae [paper]" in x]
    cells = [c.strip() for c in line.split("|")]
    assert "reported: A et al., V 2018" in cells and "0.2250" in cells
    assert cells[6] == ""  # n_seeds: no seeds measured here
    assert not any("[paper]" in x for x in lines if "synthetic" in x)


def test_same_backbone_is_not_flagged(tmp_path):
    same = parse_document(doc(backbone="EfficientNet-Lite0", backbone_id="efficientnet_lite0",
                              image_size=96), "t")  # fmt: skip
    board = build_leaderboard(RECORDS, same)
    notes = board[is_reported(board)]["notes"].iloc[0]
    assert "differs: data" in notes and "backbone," not in notes and "image size" not in notes


def test_cir_rows_match_on_protocol_and_split():
    cir = [
        rec(
            "lincir",
            0,
            0,
            task="cir",
            dataset="circo",
            split="val",
            spec="circo",
            family=None,
            metrics={"mAP@5": 0.1, "mAP@10": 0.11},
        )  # fmt: skip
    ]
    published = parse_document(
        {
            "schema": 1,
            "task": "cir",
            "entries": [
                entry("lincir", dataset="circo", split="val", spec="circo",
                      metrics={"mAP@5": 0.1259}, backbone_id="openai/clip-vit-large-patch14"),
                entry("lincir", dataset="circo", split="test", spec="circo",
                      metrics={"mAP@5": 0.2}),  # the test split: not beside val rows
            ],
        },
        "cir.yaml",
    )  # fmt: skip
    board = build_leaderboard(cir, published)
    (row,) = board[is_reported(board)].to_dict("records")
    assert row["method"] == "lincir [paper]" and row["mAP@5"] == pytest.approx(0.1259)
    assert row["split"] == "val" and "differs: backbone" in row["notes"]


def write_results(root: Path) -> None:
    for r in RECORDS:
        path = result_path(root, r["task"], r["dataset"], r["split"], r["method"], r["seed"])
        if r["spec"]["name"] != "default":  # one result file per (.., method, seed)
            path = result_path(root / "paper-spec", r["task"], r["dataset"], r["split"],
                               r["method"], r["seed"])  # fmt: skip
        write_json_atomic(path, r)


def test_update_leaderboard_and_cli_write_a_separate_reported_table(tmp_path, capsys):
    root = tmp_path / "results"
    write_results(root)
    plain = update_leaderboard(root)
    csv = (root / "leaderboard.csv").read_text()
    board = update_leaderboard(root, reported=PUBLISHED)
    assert (root / "leaderboard.csv").read_text() == csv  # measured results alone, unchanged
    assert is_reported(board).sum() == 2 and not is_reported(plain).any()
    assert "cvae [paper]" in (root / REPORTED_CSV).read_text()
    assert "cvae [paper]" in (root / REPORTED_CSV.replace(".csv", ".md")).read_text()

    yaml_file = tmp_path / "published.yaml"
    published = [entry("frozen", spec="default", metrics={"mAP@all": 0.9})]
    yaml_file.write_text(yaml.safe_dump({"schema": 1, "task": "sbir", "entries": published}))
    assert main(["leaderboard", "--results-dir", str(root), "--reported-file", str(yaml_file)]) == 0
    out = capsys.readouterr().out
    assert "frozen [paper]" in out and "1 published row(s)" in out
    assert main(["leaderboard", "--results-dir", str(root)]) == 0
    assert "[paper]" not in capsys.readouterr().out
    # the packaged files load through the CLI too (no SBIR match here: a message, no rows)
    assert main(["leaderboard", "--results-dir", str(root), "--reported"]) == 0
    assert "published row(s)" in capsys.readouterr().out


# ---------------------------------------------------------------------------- the HTML report


def test_html_report_shows_marked_reported_rows_beside_their_group(tmp_path):
    root = tmp_path / "results"
    page = html.unescape(render_report([Run(r) for r in RECORDS], root, reported=PUBLISHED))
    board = page.split('<section id="leaderboard">')[1].split("</section>")[0]
    assert board.count('<tr class="row reported">') == 2
    assert "cvae [paper]" in board and "reported: A et al., V 2018" in board
    assert "<th>source</th>" in board and "are numbers published in the paper" in board
    sketchy = board.split("sbir · sketchy-mini · sketchy21")[1].split("<h3>")[0]
    assert "cvae [paper]" in sketchy and "frozen [paper]" in sketchy
    assert "[paper]" not in board.split("sbir · synthetic · default")[1].split("<h3>")[0]
    # the bold best value is a measured one: the paper's 0.9 is not bold
    assert "<td class=best>0.9000" not in board and "<td>0.9000</td>" in board
    # charts show measured methods only, with the colours they have without reported rows
    charts = page.split('<section id="charts">')[1].split("</section>")[0]
    assert "[paper]" not in charts
    plain = html.unescape(render_report([Run(r) for r in RECORDS], root))
    assert charts == plain.split('<section id="charts">')[1].split("</section>")[0]
    assert '<tr class="row reported">' not in plain and "<th>source</th>" not in plain


def test_write_report_reads_the_packaged_numbers_or_none(tmp_path):
    root = tmp_path / "results"
    write_results(root)
    path = write_report(root, reported=PUBLISHED)
    assert "cvae [paper]" in path.read_text()
    assert "[paper]" not in write_report(root, reported=False).read_text()
    write_report(root)  # the packaged files: loads, validates, renders
