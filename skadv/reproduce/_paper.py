"""Ko & Lim's published numbers and attack settings, and their oracle threshold.

The per-class evaluation itself is public: :func:`skadv.metrics.per_class_roc_auc`
and :func:`skadv.metrics.per_class_rates`.
"""

import numpy as np
from sklearn.metrics import roc_curve

PAPER_ATTACKS = ("fgsm", "bim", "mim")
PAPER_EPS = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30)

ATTACK_NAMES = {
    "fgsm": "FGSM",
    "bim": "PGD (BIM)",
    "mim": "MIM",
    "pgd": "PGD (random start)",
    "cw": "Carlini-Wagner L2",
    "deepfool": "DeepFool",
}

# Figure 2 of the paper: mean per-class ROC AUC over the 10 MNIST classes
# (eps = 0.10 stated in the text, the rest read off the plot, +-0.002).
PAPER_MEAN_AUC = {
    "fgsm": (0.930, 0.9583, 0.969, 0.973, 0.977, 0.981),
    "bim": (0.972, 0.9942, 0.996, 0.996, 0.996, 0.996),
    "mim": (0.980, 0.9944, 0.996, 0.996, 0.996, 0.996),
}
# Worst class at eps = 0.05, read off Figure 2.
PAPER_WORST_AUC_005 = {"fgsm": 0.873, "bim": 0.952, "mim": 0.956}

# Table 1: detection accuracy of four published detectors and of Ko & Lim's.
PUBLISHED_DETECTORS = (
    "KD+BU (Feinman)",
    "Mahalanobis (Lee)",
    "Liang et al.",
    "LID (Ma)",
    "Ko & Lim",
)
PAPER_TABLE1 = {
    ("fgsm", 0.1): (0.7768, 0.7952, 0.9514, 0.8030, 0.9233),
    ("fgsm", 0.2): (0.8672, 0.8977, 0.9826, 0.7767, 0.9573),
    ("fgsm", 0.3): (0.8925, 0.9380, 0.9887, 0.8681, 0.9693),
    ("bim", 0.1): (0.9419, 0.8096, 0.9716, 0.8092, 0.9839),
    ("bim", 0.2): (0.9768, 0.8330, 0.9890, 0.9027, 0.9894),
    ("bim", 0.3): (0.9801, 0.7088, 0.9896, 0.9574, 0.9901),
}


def set_key(attack, eps=None):
    """Name of an adversarial set: ``"fgsm@0.05"``, or ``"cw"`` without eps."""
    return attack if eps is None else f"{attack}@{eps:.2f}"


def paper_mean_auc(attack, eps):
    """The published mean AUC for ``attack`` at ``eps``, or None."""
    values = PAPER_MEAN_AUC.get(attack)
    if values is None:
        return None
    for e, v in zip(PAPER_EPS, values, strict=True):
        if abs(e - eps) < 1e-9:
            return v
    return None


def per_class_oracle_accuracy(y_true, y_score, y_class, *, labels=None):
    """Detection accuracy with each class's best threshold chosen on the test set.

    This is how Ko & Lim's code picks its thresholds (an oracle that looks at
    the adversarial scores): an upper bound, reported only to compare with
    their Table 1. The rows are grouped as in
    :func:`skadv.metrics.per_class_roc_auc`. Returns the means over classes of
    the best accuracy and of the best balanced accuracy.
    """
    adversarial = np.asarray(y_true) == -1
    y_score, y_class = np.asarray(y_score, dtype=np.float64), np.asarray(y_class)
    labels = np.unique(y_class) if labels is None else labels
    accuracies, balanced = [], []
    for t in labels:
        rows = y_class == t
        n_pos = int(np.count_nonzero(adversarial[rows]))
        n_neg = int(np.count_nonzero(rows)) - n_pos
        if n_neg == 0 or n_pos == 0:
            continue
        fpr, tpr, _ = roc_curve(
            adversarial[rows], y_score[rows], drop_intermediate=False
        )
        correct = tpr * n_pos + (1 - fpr) * n_neg
        accuracies.append(correct.max() / (n_neg + n_pos))
        balanced.append(((1 - fpr + tpr) / 2).max())
    return {
        "accuracy": float(np.mean(accuracies)) if accuracies else None,
        "balanced_accuracy": float(np.mean(balanced)) if balanced else None,
    }
