import re

import numpy as np
import pytest

from skadv.metrics import (
    detection_accuracy,
    detection_roc_auc,
    make_tpr_at_fpr_scorer,
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
