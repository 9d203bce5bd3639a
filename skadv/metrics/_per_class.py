"""Per-class detection metrics: Ko & Lim's evaluation protocol.

A detector with one reconstructor per class is judged class by class: for
class ``t``, the benign inputs of class ``t`` against the adversarial inputs
that the model classifies as ``t`` (the ones ``t``'s reconstructor scores).
"""

import numpy as np
from sklearn.utils import check_consistent_length, column_or_1d
from sklearn.utils._param_validation import validate_params

from skadv._validation import check_detection_labels
from skadv.metrics._detection import detection_roc_auc


def _check_per_class(y_true, values, y_class, labels, *, values_name):
    """Validated 1-D arrays: adversarial mask, values, classes, and the labels."""
    adversarial = ~check_detection_labels(y_true, name="y_true")
    values = column_or_1d(values, warn=True)
    y_class = column_or_1d(y_class, warn=True)
    if adversarial.shape[0] != values.shape[0]:
        raise ValueError(
            f"y_true has {adversarial.shape[0]} labels but {values_name} has "
            f"{values.shape[0]} values; they must match."
        )
    check_consistent_length(adversarial, y_class)
    labels = np.unique(y_class) if labels is None else column_or_1d(labels)
    return adversarial, values, y_class, labels


@validate_params(
    {
        "y_true": ["array-like"],
        "y_score": ["array-like"],
        "y_class": ["array-like"],
        "labels": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def per_class_roc_auc(y_true, y_score, y_class, *, labels=None):
    """ROC AUC of detecting adversarial inputs, class by class.

    Ko & Lim's evaluation: one ROC AUC per class ``t``, on the rows whose
    ``y_class`` is ``t``, then the mean, min and max over the classes. In
    their protocol a benign input counts for its true label and an
    adversarial input for the class the model predicts for it (the class
    whose reconstructor scores it), and only successful attacks count.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        +1 benign, -1 adversarial.

    y_score : array-like of shape (n_samples,)
        Higher means more adversarial, e.g. ``reconstruction_error``.

    y_class : array-like of shape (n_samples,)
        The class each row counts for: the true label of a benign input, the
        model's prediction for an adversarial one.

    labels : array-like, default=None
        The classes to report, in this order. None: the sorted values of
        ``y_class``.

    Returns
    -------
    result : dict
        ``classes`` (the labels, as a list), ``per_class`` (each class's ROC
        AUC, None for a class without benign or without adversarial rows),
        ``n_benign`` and ``n_adversarial`` (rows per class), and ``mean``,
        ``min`` and ``max`` over the classes that have an AUC (None when none
        has).

    See Also
    --------
    detection_roc_auc : The ROC AUC over all rows at once.
    per_class_rates : False- and true-positive rates of hard decisions on the
        same per-class sets.

    References
    ----------
    .. [1] G. Ko and G. Lim, "Unsupervised Detection of Adversarial Examples
       with Model Explanations", AdvML workshop at KDD 2021, arXiv:2107.10480.

    Examples
    --------
    >>> from skadv.metrics import per_class_roc_auc
    >>> y_true = [1, 1, 1, 1, -1, -1, -1]
    >>> y_score = [0.1, 0.2, 0.5, 0.6, 0.3, 0.4, 0.9]
    >>> y_class = [0, 0, 1, 1, 0, 0, 1]
    >>> result = per_class_roc_auc(y_true, y_score, y_class)
    >>> result["per_class"]
    [1.0, 1.0]
    >>> result["n_adversarial"]
    [2, 1]
    >>> per_class_roc_auc(y_true, y_score, y_class, labels=[0, 1, 2])["per_class"]
    [1.0, 1.0, None]
    """
    adversarial, y_score, y_class, labels = _check_per_class(
        y_true, y_score, y_class, labels, values_name="y_score"
    )
    aucs, n_benign, n_adversarial = [], [], []
    for label in labels:
        rows = y_class == label
        n_adv = int(np.count_nonzero(adversarial[rows]))
        n_benign.append(int(np.count_nonzero(rows)) - n_adv)
        n_adversarial.append(n_adv)
        if n_adv == 0 or n_benign[-1] == 0:
            aucs.append(None)
            continue
        y = np.where(adversarial[rows], -1, 1)
        aucs.append(detection_roc_auc(y, y_score[rows]))
    defined = [a for a in aucs if a is not None]
    return {
        "classes": labels.tolist(),
        "per_class": aucs,
        "n_benign": n_benign,
        "n_adversarial": n_adversarial,
        "mean": float(np.mean(defined)) if defined else None,
        "min": float(np.min(defined)) if defined else None,
        "max": float(np.max(defined)) if defined else None,
    }


@validate_params(
    {
        "y_true": ["array-like"],
        "y_pred": ["array-like"],
        "y_class": ["array-like"],
        "labels": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def per_class_rates(y_true, y_pred, y_class, *, labels=None):
    """False- and true-positive rates and detection accuracy of hard decisions.

    The rows are grouped by ``y_class`` as in :func:`per_class_roc_auc`; the
    rates are pooled over all rows, the accuracies are means over the classes.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        +1 benign, -1 adversarial.

    y_pred : array-like of shape (n_samples,)
        The detector's +1/-1 decisions, e.g. its ``predict``.

    y_class : array-like of shape (n_samples,)
        The class each row counts for: the true label of a benign input, the
        model's prediction for an adversarial one.

    labels : array-like, default=None
        The classes to average over. None: the values of ``y_class``.

    Returns
    -------
    result : dict
        ``fpr`` (share of benign rows flagged) and ``tpr`` (share of
        adversarial rows flagged), pooled over all rows (None without such
        rows); ``accuracy`` and ``balanced_accuracy``: the means over the
        classes with both kinds of rows of each class's detection accuracy
        and of its balanced accuracy ((1 - FPR + TPR) / 2, the accuracy on a
        set with as many adversarial as benign inputs), None when no class
        has both; ``pooled_accuracy`` and ``pooled_balanced_accuracy``, the
        same on all rows at once.

    See Also
    --------
    per_class_roc_auc : The threshold-free counterpart.
    detection_accuracy : Accuracy over all rows at once.

    Examples
    --------
    >>> from skadv.metrics import per_class_rates
    >>> y_true = [1, 1, 1, 1, -1, -1, -1]
    >>> y_pred = [1, 1, 1, -1, -1, 1, -1]
    >>> y_class = [0, 0, 1, 1, 0, 0, 1]
    >>> rates = per_class_rates(y_true, y_pred, y_class)
    >>> rates["fpr"], round(rates["tpr"], 3)
    (0.25, 0.667)
    >>> rates["balanced_accuracy"]  # class 0: (1 + 0.5) / 2; class 1: (0.5 + 1) / 2
    0.75
    """
    adversarial, y_pred, y_class, labels = _check_per_class(
        y_true, y_pred, y_class, labels, values_name="y_pred"
    )
    flagged = ~check_detection_labels(y_pred, name="y_pred")
    benign_flag, adv_flag = flagged[~adversarial], flagged[adversarial]
    accuracies, balanced = [], []
    for label in labels:
        neg = benign_flag[y_class[~adversarial] == label]
        pos = adv_flag[y_class[adversarial] == label]
        if neg.size and pos.size:
            accuracies.append(((~neg).sum() + pos.sum()) / (neg.size + pos.size))
            balanced.append((1 - neg.mean() + pos.mean()) / 2)
    fpr = float(benign_flag.mean()) if benign_flag.size else None
    tpr = float(adv_flag.mean()) if adv_flag.size else None
    n = flagged.size
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
