"""Detection metrics and scorers: "adversarial" (-1) is the positive class.

Metric functions take +1 (benign) / -1 (adversarial) labels and scores where
higher means more adversarial (e.g. ``reconstruction_error``). Scorers read a
detector's ``decision_function`` (higher means benign) and need no sign tricks:
pass them as ``scoring=`` to ``GridSearchCV`` with +1/-1 labels. The per-class
metrics evaluate class by class, as Ko & Lim do.
"""

from skadv.metrics._detection import (
    detection_accuracy,
    detection_accuracy_scorer,
    detection_roc_auc,
    detection_scorers,
    make_tpr_at_fpr_scorer,
    roc_auc_scorer,
    tpr_at_fpr,
)
from skadv.metrics._per_class import per_class_rates, per_class_roc_auc

__all__ = [
    "detection_accuracy",
    "detection_accuracy_scorer",
    "detection_roc_auc",
    "detection_scorers",
    "make_tpr_at_fpr_scorer",
    "per_class_rates",
    "per_class_roc_auc",
    "roc_auc_scorer",
    "tpr_at_fpr",
]
