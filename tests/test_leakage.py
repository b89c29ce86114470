"""The ImageNet-1k leakage flag."""

from __future__ import annotations

import json

from zsbench.datamodules.split_manifests import SPLITS_DIR
from zsbench.leakage import imagenet_overlap, photo_wnids


def unseen_of(split):
    return json.loads((SPLITS_DIR / f"{split}.json").read_text())["unseen"]


def test_sketchy25_unseen_classes_are_imagenet_classes_by_name():
    res = imagenet_overlap({c: set() for c in unseen_of("sketchy25")}, "imagenet-1k")
    assert res["leak"] and res["checked_by"] == "name"
    assert {"cup", "snail", "volcano"} <= set(res["unseen_classes_matching_pretraining_names"])


def test_sketchy21_by_name_only_the_mouse_homonym():
    """Yelamarthi et al. chose 21 classes that are not ImageNet-1k classes; by name only 'mouse'
    matches (ImageNet's is the computer mouse), which is why WordNet ids decide when known."""
    res = imagenet_overlap({c: set() for c in unseen_of("sketchy21")}, "imagenet-1k")
    assert list(res["unseen_classes_matching_pretraining_names"]) == ["mouse"]


def test_wordnet_ids_decide_when_photos_carry_them():
    mouse_animal, computer_mouse, goldfinch = "n02330245", "n03793489", "n01531178"
    res = imagenet_overlap({"mouse": {mouse_animal}, "songbird": {goldfinch}}, "imagenet-1k")
    assert res["checked_by"] == "wordnet_id" and res["leak"]
    assert res["unseen_classes_in_pretraining_by_wordnet_id"] == {"songbird": [goldfinch]}
    clean = imagenet_overlap({"mouse": {mouse_animal}}, "imagenet-1k")
    assert not clean["leak"]
    assert imagenet_overlap({"mouse": {computer_mouse}}, None) is None  # no pretraining: no flag
    # a user's weights file of unknown pretraining is checked as if ImageNet, and says so
    guess = imagenet_overlap({"songbird": {goldfinch}}, "unknown")
    assert guess["leak"] and guess["pretrained_on"] == "unknown"
    assert imagenet_overlap({"songbird": {goldfinch}}, "openai-clip") is None
    assert photo_wnids(["/a/n02330245_123.jpg", "/b/x.png"]) == {mouse_animal}
