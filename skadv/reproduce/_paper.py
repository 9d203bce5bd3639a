"""Ko & Lim's evaluation protocol and their published numbers.

Kept apart from the orchestration in :mod:`skadv.reproduce._study` so that the
per-class evaluation can be tested on hand-made data in milliseconds.
"""

import numpy as np
from sklearn.metrics import roc_curve

from skadv.metrics import detection_roc_auc

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


def _as_1d(name, values, dtype=None):
    array = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {array.shape}.")
    return array


def _adversarial_rows(adv_score, adv_pred, adv_success):
    adv_score = _as_1d("adv_score", adv_score, np.float64)
    adv_pred = _as_1d("adv_pred", adv_pred)
    if adv_pred.shape != adv_score.shape:
        raise ValueError("adv_score and adv_pred must have the same length.")
    if adv_success is not None:
        keep = _as_1d("adv_success", adv_success).astype(bool)
        if keep.shape != adv_score.shape:
            raise ValueError("adv_success must have the length of adv_score.")
        adv_score, adv_pred = adv_score[keep], adv_pred[keep]
    return adv_score, adv_pred


def per_class_auc(
    benign_score,
    benign_label,
    adv_score,
    adv_pred,
    adv_success=None,
    *,
    classes=None,
):
    """Ko & Lim's per-class ROC AUC of detecting adversarial inputs.

    For each class ``t``: negatives are the benign inputs whose *true* label
    is ``t``, positives the *successful* adversarial inputs that the model
    *predicts* as ``t`` (the class whose reconstructor scores them). Scores are
    higher for more adversarial inputs (reconstruction errors).

    Parameters
    ----------
    benign_score : array-like of shape (n_benign,)
        Scores of the benign test inputs.
    benign_label : array-like of shape (n_benign,)
        Their true labels.
    adv_score : array-like of shape (n_adv,)
        Scores of the adversarial inputs.
    adv_pred : array-like of shape (n_adv,)
        The model's predictions on the adversarial inputs.
    adv_success : array-like of bool, default=None
        Which attacks succeeded; only those count. None: all of them.
    classes : array-like, default=None
        Classes to report; default: the labels in ``benign_label``.

    Returns
    -------
    result : dict
        ``classes``, ``per_class`` (AUC per class, None where a class has no
        positive or no negative), ``n_benign``, ``n_adversarial`` (per class),
        and ``mean``, ``min``, ``max`` over the classes with an AUC (None if
        none has one).
    """
    benign_score = _as_1d("benign_score", benign_score, np.float64)
    benign_label = _as_1d("benign_label", benign_label)
    if benign_label.shape != benign_score.shape:
        raise ValueError("benign_score and benign_label must have the same length.")
    adv_score, adv_pred = _adversarial_rows(adv_score, adv_pred, adv_success)
    classes = np.unique(benign_label) if classes is None else np.asarray(classes)
    aucs, n_neg, n_pos = [], [], []
    for t in classes:
        neg = benign_score[benign_label == t]
        pos = adv_score[adv_pred == t]
        n_neg.append(int(neg.size))
        n_pos.append(int(pos.size))
        if neg.size == 0 or pos.size == 0:
            aucs.append(None)
            continue
        y = np.r_[np.ones(neg.size), -np.ones(pos.size)]
        aucs.append(detection_roc_auc(y, np.r_[neg, pos]))
    defined = [a for a in aucs if a is not None]
    return {
        "classes": [int(c) for c in classes],
        "per_class": aucs,
        "n_benign": n_neg,
        "n_adversarial": n_pos,
        "mean": float(np.mean(defined)) if defined else None,
        "min": float(np.min(defined)) if defined else None,
        "max": float(np.max(defined)) if defined else None,
    }


def per_class_rates(
    benign_flag,
    benign_label,
    adv_flag,
    adv_pred,
    adv_success=None,
    *,
    classes=None,
):
    """False/true-positive rates and detection accuracy of hard decisions.

    The same per-class sets as :func:`per_class_auc`; ``*_flag`` is True where
    the detector flags the input as adversarial.

    Returns
    -------
    result : dict
        ``fpr`` (benign inputs flagged) and ``tpr`` (successful adversarial
        inputs flagged), pooled over all inputs; ``accuracy`` and
        ``balanced_accuracy``: means over the classes of each class's detection
        accuracy and of its balanced accuracy ((1 - FPR + TPR) / 2, the
        accuracy on a set with as many adversarial as benign inputs);
        ``pooled_accuracy`` and ``pooled_balanced_accuracy`` on the pooled set.
    """
    benign_flag = _as_1d("benign_flag", benign_flag).astype(bool)
    benign_label = _as_1d("benign_label", benign_label)
    adv_flag, adv_pred = _adversarial_rows(adv_flag, adv_pred, adv_success)
    adv_flag = adv_flag.astype(bool)
    classes = np.unique(benign_label) if classes is None else np.asarray(classes)
    accuracies, balanced = [], []
    for t in classes:
        neg = benign_flag[benign_label == t]
        pos = adv_flag[adv_pred == t]
        if neg.size and pos.size:
            accuracies.append(((~neg).sum() + pos.sum()) / (neg.size + pos.size))
            balanced.append((1 - neg.mean() + pos.mean()) / 2)
    fpr = float(benign_flag.mean()) if benign_flag.size else None
    tpr = float(adv_flag.mean()) if adv_flag.size else None
    n = benign_flag.size + adv_flag.size
    return {
        "fpr": fpr,
        "tpr": tpr,
        "accuracy": float(np.mean(accuracies)) if accuracies else None,
        "balanced_accuracy": float(np.mean(balanced)) if balanced else None,
        "pooled_accuracy": (
            float(((~benign_flag).sum() + adv_flag.sum()) / n) if n else None
        ),
        "pooled_balanced_accuracy": (
            None if fpr is None or tpr is None else (1 - fpr + tpr) / 2
        ),
    }


def per_class_oracle_accuracy(
    benign_score, benign_label, adv_score, adv_pred, adv_success=None, *, classes=None
):
    """Detection accuracy with each class's best threshold chosen on the test set.

    This is how Ko & Lim's code picks its thresholds (an oracle that looks at
    the adversarial scores): an upper bound, reported only to compare with
    their Table 1. Returns the means over classes of the best accuracy and of
    the best balanced accuracy.
    """
    benign_score = _as_1d("benign_score", benign_score, np.float64)
    benign_label = _as_1d("benign_label", benign_label)
    adv_score, adv_pred = _adversarial_rows(adv_score, adv_pred, adv_success)
    classes = np.unique(benign_label) if classes is None else np.asarray(classes)
    accuracies, balanced = [], []
    for t in classes:
        neg = benign_score[benign_label == t]
        pos = adv_score[adv_pred == t]
        if neg.size == 0 or pos.size == 0:
            continue
        y = np.r_[np.zeros(neg.size), np.ones(pos.size)]
        fpr, tpr, _ = roc_curve(y, np.r_[neg, pos], drop_intermediate=False)
        correct = tpr * pos.size + (1 - fpr) * neg.size
        accuracies.append(correct.max() / (neg.size + pos.size))
        balanced.append(((1 - fpr + tpr) / 2).max())
    return {
        "accuracy": float(np.mean(accuracies)) if accuracies else None,
        "balanced_accuracy": float(np.mean(balanced)) if balanced else None,
    }
