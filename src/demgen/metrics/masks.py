"""Binary-mask agreement (water, cloud, built-up...): precision, recall, F1 and IoU.

With TP, FP, FN counted over valid pixels only (``valid`` (H, W) boolean; pixels outside
it never count, whatever the masks hold there):

    precision = TP / (TP + FP)          recall = TP / (TP + FN)
    F1 = 2 TP / (2 TP + FP + FN)        IoU (Jaccard) = TP / (TP + FP + FN)

Empty masks, where a ratio is 0/0:

* both masks empty (over valid pixels): every score is 1.0. There was nothing to find
  and nothing was claimed, so the prediction is exactly right; F1 and IoU are 0/0 only
  in this case, and scoring a perfect answer 0 would punish e.g. a correct "no water"
  chip and drag dataset means down.
* only one mask empty: the score that is 0/0 (precision when the prediction is empty,
  recall when the reference is) is 0.0, like F1 and IoU (which are then 0 too), so no
  score ever rates a wrong answer as perfect.
* no valid pixel: every score is NaN (nothing was compared).

Masks may be bool or numeric; numeric values count as True where non-zero (threshold
probabilities before calling).
"""

from __future__ import annotations

from math import nan

import numpy as np


def confusion_counts(
    pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None
) -> dict[str, int]:
    """TP, FP, FN, TN of two binary masks over valid pixels."""
    p = np.asarray(pred).astype(bool)
    r = np.asarray(ref).astype(bool)
    if p.shape != r.shape:
        raise ValueError(f"pred {p.shape} and ref {r.shape} must have the same shape")
    ok = np.ones(p.shape, bool) if valid is None else np.asarray(valid, bool)
    if ok.shape != p.shape:
        raise ValueError(f"valid {ok.shape} must match the masks {p.shape}")
    p, r = p[ok], r[ok]
    tp = int(np.count_nonzero(p & r))
    fp = int(np.count_nonzero(p & ~r))
    fn = int(np.count_nonzero(~p & r))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(p.size) - tp - fp - fn}


def _ratio(num: int, den: int, both_empty: bool) -> float:
    """num / den, with 0/0 -> 1.0 when both masks are empty and 0.0 otherwise."""
    if den:
        return num / den
    return 1.0 if both_empty else 0.0


def mask_metrics(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None) -> dict:
    """Precision, recall, F1, IoU (and the counts) of a predicted mask against a reference.

    See the module docstring for the formulas and the empty-mask conventions.
    """
    c = confusion_counts(pred, ref, valid)
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    n = tp + fp + fn + tn
    out: dict = dict(c, valid_px=n)
    if n == 0:
        return out | {"precision": nan, "recall": nan, "f1": nan, "iou": nan}
    both_empty = tp + fp + fn == 0
    out["precision"] = _ratio(tp, tp + fp, both_empty)
    out["recall"] = _ratio(tp, tp + fn, both_empty)
    out["f1"] = _ratio(2 * tp, 2 * tp + fp + fn, both_empty)
    out["iou"] = _ratio(tp, tp + fp + fn, both_empty)
    return out


def f1_score(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None) -> float:
    """F1 = 2 TP / (2 TP + FP + FN) over valid pixels (1.0 for two empty masks)."""
    return mask_metrics(pred, ref, valid)["f1"]


def iou(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None) -> float:
    """IoU = TP / (TP + FP + FN) over valid pixels (1.0 for two empty masks)."""
    return mask_metrics(pred, ref, valid)["iou"]
