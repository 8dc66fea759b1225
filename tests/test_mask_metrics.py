"""Binary-mask metrics: precision, recall, F1, IoU over valid pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from demgen.io.jsonio import dumps
from demgen.metrics.masks import confusion_counts, f1_score, iou, mask_metrics


def test_tiny_masks_by_hand():
    ref = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]], bool)
    pred = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0]], bool)
    # TP = 2 (0,0),(1,1); FP = 2 (1,2),(2,0); FN = 1 (0,1); TN = 4
    m = mask_metrics(pred, ref)
    assert (m["tp"], m["fp"], m["fn"], m["tn"], m["valid_px"]) == (2, 2, 1, 4, 9)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(4 / 7)  # 2*2 / (4 + 2 + 1)
    assert m["iou"] == pytest.approx(2 / 5)
    assert f1_score(pred, ref) == m["f1"] and iou(pred, ref) == m["iou"]
    # F1 is the harmonic mean of precision and recall
    p, r = m["precision"], m["recall"]
    assert m["f1"] == pytest.approx(2 * p * r / (p + r))


def test_identical_masks_score_one_numeric_masks_accepted():
    ref = np.zeros((5, 5), np.uint8)
    ref[1:3, 2:5] = 255
    m = mask_metrics(ref.copy(), ref)
    assert m["precision"] == m["recall"] == m["f1"] == m["iou"] == 1.0


def test_empty_mask_conventions():
    empty = np.zeros((4, 4), bool)
    some = empty.copy()
    some[0, 0] = True
    both = mask_metrics(empty, empty)
    assert both["f1"] == both["iou"] == both["precision"] == both["recall"] == 1.0
    missed = mask_metrics(empty, some)  # nothing predicted, something there
    assert missed["precision"] == missed["recall"] == missed["f1"] == missed["iou"] == 0.0
    false_alarm = mask_metrics(some, empty)  # something predicted, nothing there
    assert false_alarm["precision"] == false_alarm["recall"] == 0.0
    assert false_alarm["f1"] == false_alarm["iou"] == 0.0
    none_valid = mask_metrics(some, some, np.zeros((4, 4), bool))
    assert math.isnan(none_valid["f1"]) and none_valid["valid_px"] == 0
    assert '"f1": null' in dumps(none_valid)


def test_invalid_pixels_never_count():
    rng = np.random.default_rng(0)
    ref = rng.uniform(size=(16, 16)) > 0.5
    pred = rng.uniform(size=(16, 16)) > 0.4
    valid = rng.uniform(size=(16, 16)) > 0.3
    base = mask_metrics(pred, ref, valid)
    p2, r2 = pred.copy(), ref.copy()
    p2[~valid] = ~p2[~valid]
    r2[~valid] = True
    assert mask_metrics(p2, r2, valid) == base
    assert base["valid_px"] == int(valid.sum())
    assert sum(confusion_counts(pred, ref, valid).values()) == int(valid.sum())
    with pytest.raises(ValueError):
        mask_metrics(pred, ref[:8])
