"""Detection metrics and scorers with "adversarial" (-1) as the positive class."""

import numbers

import numpy as np
from sklearn.metrics import make_scorer, roc_auc_score, roc_curve
from sklearn.utils import check_array
from sklearn.utils._param_validation import Interval, validate_params

from skadv._validation import check_detection_labels


def _adversarial(y_true, *, both=False):
    adversarial = ~check_detection_labels(y_true, name="y_true")
    if adversarial.size == 0:
        raise ValueError("y_true is empty: there is nothing to score.")
    if both and (adversarial.all() or not adversarial.any()):
        raise ValueError(
            "y_true needs both benign (+1) and adversarial (-1) rows to rank them; "
            f"got only {'adversarial' if adversarial.any() else 'benign'} rows."
        )
    return adversarial


@validate_params(
    {"y_true": ["array-like"], "y_score": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def detection_roc_auc(y_true, y_score):
    """ROC AUC of detecting adversarial inputs.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        +1 benign, -1 adversarial.

    y_score : array-like of shape (n_samples,)
        Higher means more adversarial, e.g. ``reconstruction_error``.

    Returns
    -------
    auc : float
        1.0 when every adversarial input scores above every benign one.

    Examples
    --------
    >>> from skadv.metrics import detection_roc_auc
    >>> detection_roc_auc([1, 1, -1, -1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    adversarial = _adversarial(y_true, both=True)
    return float(roc_auc_score(adversarial, _check_scores(y_score, adversarial)))


@validate_params(
    {
        "y_true": ["array-like"],
        "y_score": ["array-like"],
        "fpr": [Interval(numbers.Real, 0, 1, closed="both")],
    },
    prefer_skip_nested_validation=True,
)
def tpr_at_fpr(y_true, y_score, *, fpr=0.05):
    """Share of adversarial inputs caught at a false-positive budget.

    The best true-positive rate of any threshold whose false-positive rate on
    the benign inputs is at most ``fpr``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        +1 benign, -1 adversarial.

    y_score : array-like of shape (n_samples,)
        Higher means more adversarial.

    fpr : float in [0, 1], default=0.05
        The largest acceptable false-positive rate.

    Returns
    -------
    tpr : float
        True-positive rate (recall on adversarial inputs).

    Examples
    --------
    >>> from skadv.metrics import tpr_at_fpr
    >>> tpr_at_fpr([1, 1, 1, 1, -1, -1], [0.1, 0.2, 0.3, 0.9, 0.5, 0.95], fpr=0.25)
    1.0
    >>> tpr_at_fpr([1, 1, 1, 1, -1, -1], [0.1, 0.2, 0.3, 0.9, 0.5, 0.95], fpr=0.0)
    0.5
    """
    # Keep every threshold: with tied scores the dropped points can be the
    # best ones under the budget.
    adversarial = _adversarial(y_true, both=True)
    fprs, tprs, _ = roc_curve(
        adversarial, _check_scores(y_score, adversarial), drop_intermediate=False
    )
    return float(tprs[fprs <= fpr].max())


@validate_params(
    {"y_true": ["array-like"], "y_pred": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def detection_accuracy(y_true, y_pred):
    """Share of inputs labelled correctly as benign (+1) or adversarial (-1).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        +1 benign, -1 adversarial.

    y_pred : array-like of shape (n_samples,)
        Predicted +1/-1 labels, e.g. a detector's ``predict``.

    Returns
    -------
    accuracy : float
        Fraction of correct labels.

    Examples
    --------
    >>> from skadv.metrics import detection_accuracy
    >>> detection_accuracy([1, 1, -1, -1], [1, -1, -1, -1])
    0.75
    """
    predicted_benign = check_detection_labels(y_pred, name="y_pred")
    benign = ~_adversarial(y_true)
    if benign.shape != predicted_benign.shape:
        raise ValueError(
            f"y_true has {benign.shape[0]} labels but y_pred has "
            f"{predicted_benign.shape[0]}; they must match."
        )
    return float(np.mean(benign == predicted_benign))


def _check_scores(y_score, adversarial):
    try:
        y_score = check_array(
            y_score, ensure_2d=False, dtype="numeric", input_name="y_score"
        )
    except ValueError as exc:
        if "y_score" in str(exc):
            raise
        raise ValueError(f"y_score must hold numeric scores: {exc}") from exc
    if y_score.shape != adversarial.shape:
        raise ValueError(
            f"y_score has {y_score.shape[0]} scores but y_true has "
            f"{adversarial.shape[0]} labels; they must match."
        )
    return y_score


def _roc_auc_from_decision(y_true, decision):
    # decision_function is higher for benign inputs: negate to rank adversarial first.
    return detection_roc_auc(y_true, -np.asarray(decision))


def _tpr_at_fpr_from_decision(y_true, decision, fpr):
    return tpr_at_fpr(y_true, -np.asarray(decision), fpr=fpr)


def make_tpr_at_fpr_scorer(fpr=0.05):
    """A scorer of the TPR at ``fpr``, reading the detector's ``decision_function``.

    Parameters
    ----------
    fpr : float in [0, 1], default=0.05
        The largest acceptable false-positive rate.

    Returns
    -------
    scorer : callable
        ``scorer(detector, X, y)`` with +1/-1 labels ``y``; for ``scoring=``.

    Examples
    --------
    >>> from skadv.metrics import make_tpr_at_fpr_scorer
    >>> scorer = make_tpr_at_fpr_scorer(fpr=0.01)
    """
    if not (isinstance(fpr, numbers.Real) and 0 <= fpr <= 1):
        raise ValueError(f"fpr must be a float in [0, 1]; got {fpr!r}.")
    return make_scorer(
        _tpr_at_fpr_from_decision, response_method="decision_function", fpr=fpr
    )


roc_auc_scorer = make_scorer(
    _roc_auc_from_decision, response_method="decision_function"
)
roc_auc_scorer.__doc__ = (
    """Scorer of :func:`detection_roc_auc` from ``decision_function``."""
)

detection_accuracy_scorer = make_scorer(detection_accuracy)
detection_accuracy_scorer.__doc__ = (
    """Scorer of :func:`detection_accuracy` from ``predict`` (+1/-1 labels)."""
)


def detection_scorers(fpr=0.05):
    """The package's scorers by name, for multi-metric ``scoring=``.

    Parameters
    ----------
    fpr : float in [0, 1], default=0.05
        False-positive budget of the ``"tpr_at_fpr"`` scorer.

    Returns
    -------
    scorers : dict
        ``{"roc_auc": ..., "tpr_at_fpr": ..., "detection_accuracy": ...}``.

    Examples
    --------
    >>> from skadv.metrics import detection_scorers
    >>> sorted(detection_scorers())
    ['detection_accuracy', 'roc_auc', 'tpr_at_fpr']
    """
    return {
        "roc_auc": roc_auc_scorer,
        "tpr_at_fpr": make_tpr_at_fpr_scorer(fpr),
        "detection_accuracy": detection_accuracy_scorer,
    }
