import re

import numpy as np
import pytest

from skadv.metrics import (
    detection_accuracy,
    detection_roc_auc,
    make_tpr_at_fpr_scorer,
    per_class_rates,
    per_class_roc_auc,
    tpr_at_fpr,
)


def test_auc_ranks_adversarial_first():
    y = [1, 1, 1, -1, -1]
    assert detection_roc_auc(y, [0.1, 0.2, 0.3, 0.8, 0.9]) == 1.0
    assert detection_roc_auc(y, [0.8, 0.9, 0.7, 0.1, 0.2]) == 0.0


def test_tpr_at_fpr_keeps_tied_thresholds():
    # At threshold 0.8, 2 of 3 adversarial and 2 of 3 benign rows are flagged.
    y, score = [-1, 1, -1, 1, -1, 1], [0.9, 0.9, 0.8, 0.8, 0.7, 0.7]
    assert tpr_at_fpr(y, score, fpr=2 / 3) == pytest.approx(2 / 3)


def test_both_classes_are_needed_to_rank():
    msg = "y_true needs both benign (+1) and adversarial (-1) rows to rank them"
    with pytest.raises(ValueError, match=re.escape(msg)):
        tpr_at_fpr([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=re.escape(msg)):
        detection_roc_auc([-1, -1], [0.1, 0.2])


def test_labels_follow_the_convention():
    with pytest.raises(ValueError, match=r"y_true must label each row \+1 \(benign\)"):
        detection_roc_auc([0, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"y_pred must label each row \+1 \(benign\)"):
        detection_accuracy([1, -1], [1, 0])
    assert detection_accuracy(np.array([1, -1], dtype=object), [1, 1]) == 0.5


def test_fpr_budget_is_validated():
    with pytest.raises(ValueError, match=r"fpr must be a float in \[0, 1\]; got 5"):
        make_tpr_at_fpr_scorer(fpr=5)


# Hand-made rows with known per-class AUCs (scores: higher = more adversarial).
# Class 0: benign 0.1 0.2 0.3; adversarial 0.25, 0.5, 0.15 (counted for the
#   class the model predicts for them) -> pairs won 2 + 3 + 1 = 6 of 9.
# Class 1: benign 0.5 0.6; adversarial 0.9 -> 1.0.
# Class 2: benign only -> no AUC.
PER_CLASS_TRUE = [1, 1, 1, 1, 1, 1, -1, -1, -1, -1]
PER_CLASS_SCORE = [0.1, 0.2, 0.3, 0.5, 0.6, 0.4, 0.25, 0.5, 0.15, 0.9]
PER_CLASS_CLASS = [0, 0, 0, 1, 1, 2, 0, 0, 0, 1]


def test_per_class_roc_auc_on_hand_made_rows():
    result = per_class_roc_auc(PER_CLASS_TRUE, PER_CLASS_SCORE, PER_CLASS_CLASS)
    assert result["classes"] == [0, 1, 2]
    assert result["per_class"][0] == pytest.approx(6 / 9)
    assert result["per_class"][1] == pytest.approx(1.0)
    assert result["per_class"][2] is None
    assert result["n_benign"] == [3, 2, 1]
    assert result["n_adversarial"] == [3, 1, 0]
    assert result["mean"] == pytest.approx((6 / 9 + 1.0) / 2)
    assert result["min"] == pytest.approx(6 / 9)
    assert result["max"] == pytest.approx(1.0)


def test_per_class_roc_auc_of_one_class_is_the_pooled_auc():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(30), -np.ones(20)]
    score = rng.random(50) + 0.3 * (y == -1)
    result = per_class_roc_auc(y, score, np.zeros(50, dtype=int))
    assert result["per_class"] == [detection_roc_auc(y, score)]
    assert 0.5 < result["mean"] < 1


def test_per_class_roc_auc_reports_the_labels_asked_for():
    result = per_class_roc_auc(
        PER_CLASS_TRUE, PER_CLASS_SCORE, PER_CLASS_CLASS, labels=[1, 7]
    )
    assert result["classes"] == [1, 7]
    assert result["per_class"] == [1.0, None]
    assert result["n_benign"] == [2, 0]
    assert result["mean"] == result["min"] == result["max"] == 1.0
    nothing = per_class_roc_auc([1, 1], [0.1, 0.2], [0, 1])
    assert nothing["per_class"] == [None, None] and nothing["mean"] is None


def test_per_class_rates_on_hand_made_rows():
    # Flag everything above 0.35: class 0 flags none of its 3 benign rows and
    # 1 of 3 adversarial ones; class 1 flags its 2 benign rows and its
    # adversarial row; class 2 (benign only) flags its row and is left out of
    # the per-class means.
    y_pred = np.where(np.array(PER_CLASS_SCORE) > 0.35, -1, 1)
    rates = per_class_rates(PER_CLASS_TRUE, y_pred, PER_CLASS_CLASS)
    assert rates["fpr"] == pytest.approx(3 / 6)
    assert rates["tpr"] == pytest.approx(2 / 4)
    assert rates["accuracy"] == pytest.approx((4 / 6 + 1 / 3) / 2)
    assert rates["balanced_accuracy"] == pytest.approx(((1 + 1 / 3) / 2 + 0.5) / 2)
    assert rates["pooled_accuracy"] == pytest.approx(5 / 10)
    assert rates["pooled_balanced_accuracy"] == pytest.approx(0.5)
    benign_only = per_class_rates([1, 1], [1, -1], [0, 0])
    assert benign_only["fpr"] == 0.5
    assert benign_only["tpr"] is None and benign_only["accuracy"] is None


def test_per_class_metrics_validate_their_inputs():
    with pytest.raises(ValueError, match=r"y_true must label each row \+1"):
        per_class_roc_auc([0, 1], [0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match=r"y_pred must label each row \+1"):
        per_class_rates([1, -1], [0, 1], [0, 0])
    msg = "y_true has 2 labels but y_score has 3 values; they must match."
    with pytest.raises(ValueError, match=re.escape(msg)):
        per_class_roc_auc([1, -1], [0.1, 0.2, 0.3], [0, 0])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        per_class_rates([1, -1], [1, -1], [0, 0, 1])
