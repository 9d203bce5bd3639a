"""Conformal p-values: a detector's score turned into a calibrated p-value.

A detector scores inputs (higher = more benign). Given the scores of benign
*calibration* rows held out from the detector's training, the conformal
p-value of a new score ``s`` is::

    p(s) = (1 + #{calibration scores <= s}) / (n_calibration + 1)

the share of benign rows at least as adversarial as it. When the new row is
benign and exchangeable with the calibration rows, ``P(p <= a) <= a`` for
every ``a`` (Vovk et al., 2005), so flagging ``p < contamination`` keeps the
false-positive rate on new benign rows below ``contamination``, whatever the
detector. ``ConformalDetector`` and ``EnsembleDetector`` build on the
functions of this module.
"""

import math
import numbers
import warnings

import numpy as np
from scipy import stats
from sklearn.base import (
    BaseEstimator,
    MetaEstimatorMixin,
    OutlierMixin,
    _fit_context,
    clone,
)
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split
from sklearn.utils import _safe_indexing, check_random_state, get_tags
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import _num_samples, check_is_fitted, indexable

from skadv._validation import check_detection_labels

COMBINE_METHODS = ("fisher", "bonferroni", "min", "mean")

# Combined statistics compared with calibration rows per chunk of new rows:
# bounds the (chunk, n_calibration, n_members) arrays of the exact combination.
_COMBINE_CHUNK = 256


def min_calibration_rows(contamination):
    """Fewest calibration rows for which a p-value can fall below ``contamination``.

    With ``n`` calibration rows the smallest conformal p-value is
    ``1 / (n + 1)``; a row is flagged when its p-value is below
    ``contamination``, which needs ``(n + 1) * contamination > 1``, i.e.
    ``n > 1 / contamination - 1``.

    Parameters
    ----------
    contamination : float in (0, 1)
        The target false-positive rate.

    Returns
    -------
    n_rows : int
        The smallest such ``n``: 20 at 0.05, 100 at 0.01.

    Examples
    --------
    >>> from skadv import min_calibration_rows
    >>> min_calibration_rows(0.05), min_calibration_rows(0.01)
    (20, 100)
    """
    if not 0 < contamination < 1:
        raise ValueError(f"contamination must be in (0, 1); got {contamination!r}.")
    # The smallest n with 1 / (n + 1) < contamination, in the float arithmetic
    # that predict uses (1 / 0.05 could land on either side of 20).
    n = max(math.floor(1 / contamination) - 2, 0)
    while 1.0 / (n + 1.0) >= contamination:
        n += 1
    return n


def calibration_fpr_distribution(n_calibration, contamination):
    """Distribution of the false-positive rate a calibration set of ``n`` rows gives.

    With a fixed calibration set, the share of new benign rows whose p-value
    falls below ``contamination`` is a random variable over the draw of that
    set: Beta(l, n + 1 - l) with ``l = ceil((n + 1) * contamination) - 1``,
    the number of calibration rows below the threshold (Vovk, 2012;
    Angelopoulos & Bates, 2021, section 3.2). Its mean ``l / (n + 1)`` is at
    most ``contamination``; its spread shrinks like
    ``sqrt(contamination * (1 - contamination) / (n + 2))``, which is about
    0.01 at 0.05 with 475 rows.

    Parameters
    ----------
    n_calibration : int
        Number of benign calibration rows.

    contamination : float in (0, 1)
        The threshold on the p-values.

    Returns
    -------
    distribution : scipy.stats.rv_continuous_frozen
        A frozen ``scipy.stats.beta``; ``.interval(0.9)`` gives the range of
        the realised rate for 90% of calibration sets.

    References
    ----------
    .. [1] V. Vovk, "Conditional validity of inductive conformal predictors",
       ACML 2012.
    .. [2] A. N. Angelopoulos and S. Bates, "A gentle introduction to conformal
       prediction and distribution-free uncertainty quantification",
       arXiv:2107.07511, 2021.

    Examples
    --------
    >>> from skadv import calibration_fpr_distribution
    >>> fpr = calibration_fpr_distribution(473, 0.05)
    >>> print(f"mean {fpr.mean():.4f}, std {fpr.std():.4f}")
    mean 0.0485, std 0.0099
    """
    needed = min_calibration_rows(contamination)
    if n_calibration < needed:
        raise ValueError(
            f"{n_calibration} calibration rows never flag anything at "
            f"contamination={contamination!r}: at least {needed} are needed."
        )
    n = int(n_calibration)
    below = _n_below(n, contamination)
    return stats.beta(below, n + 1 - below)


def _n_below(n, contamination):
    """How many of the attainable p-values ``j / (n + 1)`` are below ``contamination``.

    Compared as ``predict`` compares them, in float arithmetic.
    """
    return int(np.sum(np.arange(1, n + 2) / (n + 1.0) < contamination))


def conformal_threshold(calibration_scores, contamination):
    """The score below which a conformal p-value falls below ``contamination``.

    A score ``s`` (higher = more benign) has the p-value ``(1 + #{calibration
    scores <= s}) / (n + 1)``; it is below ``contamination`` exactly when
    ``s`` is below the ``l``-th smallest calibration score, ``l`` being the
    number of attainable p-values below ``contamination``. Thresholding at
    that order statistic is split-conformal calibration: the expected
    false-positive rate on exchangeable benign rows is at most
    ``contamination`` (it is ``l / (n + 1)``), where a sample quantile of few
    rows sits below the population's and overshoots it.
    """
    ordered = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    below = _n_below(ordered.size, contamination)
    return ordered[below - 1] if below else -np.inf


def _p_values(calibration_scores, scores):
    """Conformal p-values of ``scores`` against one set of calibration scores."""
    ordered = np.sort(calibration_scores)
    at_most = np.searchsorted(ordered, scores, side="right")
    return (1.0 + at_most) / (ordered.size + 1.0)


def _check_scores(scores, name):
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        # searchsorted would put NaN above every score: silently benign.
        raise ValueError(f"{name} contain NaN; scores must be numbers.")
    return scores


def class_groups(calibration_classes, classes, min_class_rows):
    """Rows of each class and the calibration rows they are compared with.

    Returns a list of ``(new_rows, calibration_rows)`` index arrays and the
    pooled classes. A class with at least ``min_class_rows`` calibration rows
    is compared with its own rows; the other classes of ``classes``
    (including classes without any calibration row) are compared with every
    calibration row.
    """
    labels, counts = np.unique(calibration_classes, return_counts=True)
    has_own = np.isin(classes, labels[counts >= min_class_rows])
    groups = [
        (np.flatnonzero(classes == label), np.flatnonzero(calibration_classes == label))
        for label in np.unique(classes[has_own])
    ]
    pooled = np.unique(classes[~has_own])
    if pooled.size:
        groups.append((np.flatnonzero(~has_own), np.arange(len(calibration_classes))))
    return groups, pooled


def conformal_p_values(
    calibration_scores,
    scores,
    *,
    calibration_classes=None,
    classes=None,
    min_class_rows=1,
):
    """Conformal p-values of new scores against benign calibration scores.

    ``p = (1 + #{calibration scores <= score}) / (n + 1)``: the share of
    benign calibration rows at least as adversarial as the new row (scores
    are higher for more benign rows, as ``score_samples`` returns them).
    Small p-values mean adversarial. On benign rows exchangeable with the
    calibration rows, ``P(p <= a) <= a`` for every ``a``.

    With classes, each row is compared with the calibration rows of its own
    class only (class-conditional, "Mondrian" conformal p-values, valid
    within each class). A class with fewer than ``min_class_rows``
    calibration rows, or none, is compared with all calibration rows
    instead, with a warning: pooled, its p-values are valid only on average
    over the classes.

    Parameters
    ----------
    calibration_scores : array-like of shape (n_calibration,)
        Scores of benign rows the detector was not trained on.

    scores : array-like of shape (n_samples,)
        Scores of the rows to test.

    calibration_classes : array-like of shape (n_calibration,), default=None
        Class of each calibration row.

    classes : array-like of shape (n_samples,), default=None
        Class of each row to test; needed with ``calibration_classes``.

    min_class_rows : int, default=1
        Fewest calibration rows for a class to be calibrated on its own.

    Returns
    -------
    p_values : ndarray of shape (n_samples,)
        In ``[1 / (n + 1), 1]``, ``n`` the number of calibration rows used.

    Examples
    --------
    >>> from skadv import conformal_p_values
    >>> conformal_p_values([0.1, 0.2, 0.3, 0.4], [0.05, 0.25, 1.0])
    array([0.2, 0.6, 1. ])
    """
    calibration_scores = _check_scores(calibration_scores, "calibration_scores")
    scores = _check_scores(scores, "scores")
    if calibration_scores.ndim != 1 or scores.ndim != 1:
        raise ValueError("calibration_scores and scores must be 1-D arrays.")
    if calibration_scores.size == 0:
        raise ValueError("calibration_scores is empty: no benign row to compare with.")
    if (calibration_classes is None) != (classes is None):
        raise ValueError(
            "Pass both calibration_classes and classes, or neither; got only "
            f"{'calibration_classes' if classes is None else 'classes'}."
        )
    if classes is None:
        return _p_values(calibration_scores, scores)
    calibration_classes = np.asarray(calibration_classes)
    classes = np.asarray(classes)
    if calibration_classes.shape != calibration_scores.shape:
        raise ValueError(
            f"calibration_classes has {calibration_classes.shape[0]} entries but "
            f"calibration_scores has {calibration_scores.shape[0]}; they must match."
        )
    if classes.shape != scores.shape:
        raise ValueError(
            f"classes has {classes.shape[0]} entries but scores has "
            f"{scores.shape[0]}; they must match."
        )
    groups, pooled = class_groups(calibration_classes, classes, min_class_rows)
    if pooled.size:
        warnings.warn(
            f"Classes {pooled.tolist()[:10]} have fewer than min_class_rows="
            f"{min_class_rows} calibration rows; their p-values are computed "
            "against the calibration rows of every class (pooled).",
            UserWarning,
            stacklevel=2,
        )
    p = np.empty(scores.shape, dtype=np.float64)
    for rows, reference in groups:
        p[rows] = _p_values(calibration_scores[reference], scores[rows])
    return p


def combine_p_values(p_values, method="fisher", *, weights=None):
    """Combine each row's p-values from several detectors into one number.

    ``"fisher"``: Fisher's method, the chi-squared survival function of
    ``-2 * sum(log p)`` with ``2 k`` degrees of freedom
    (``scipy.stats.combine_pvalues``), a valid p-value when the ``k``
    p-values are independent. ``"bonferroni"``: ``min(1, k * min p)``, valid
    under any dependence and conservative. ``"min"``: the smallest p-value,
    and ``"mean"``: their mean; neither is a p-value by itself.

    Detectors watching the same classifier are not independent, so only
    ``"bonferroni"`` is a p-value as it stands; :class:`EnsembleDetector`
    calibrates the others again on benign rows (see
    :func:`conformal_combined_p_values`).

    With ``weights``, detector ``j`` gets the share ``w_j = weights[j] /
    sum(weights)`` of the false-positive budget: ``"bonferroni"`` becomes
    ``min(1, min_j p_j / w_j)`` (flagged at level ``a`` when some ``p_j < w_j
    a``: the weighted Bonferroni test, still valid under any dependence),
    ``"min"`` ``min_j p_j / (k w_j)`` and ``"mean"`` ``sum_j w_j p_j``; equal
    weights give the unweighted rules.

    Parameters
    ----------
    p_values : array-like of shape (n_samples, n_detectors)
        Each detector's p-value of each row.

    method : {"fisher", "bonferroni", "min", "mean"}, default="fisher"
        The combination; smaller means more adversarial for all four.

    weights : array-like of shape (n_detectors,), default=None
        Positive weights of the detectors (not with ``"fisher"``); None:
        equal.

    Returns
    -------
    combined : ndarray of shape (n_samples,)
        One number per row in ``[0, 1]``.

    Examples
    --------
    >>> from skadv import combine_p_values
    >>> p = [[0.01, 0.5], [0.5, 0.5]]
    >>> combine_p_values(p, "bonferroni")
    array([0.02, 1.  ])
    >>> combine_p_values(p, "fisher").round(3)
    array([0.031, 0.597])

    Three quarters of the budget for the first detector:

    >>> combine_p_values([[0.03, 0.5], [0.5, 0.01]], "bonferroni", weights=[3, 1])
    array([0.04, 0.04])
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ValueError(
            f"p_values must be a 2-D array (n_samples, n_detectors); got shape "
            f"{p.shape}."
        )
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p_values must lie in [0, 1].")
    # Each detector's p-value scaled by the inverse of its budget share; the
    # unweighted rules keep their own arithmetic (bit for bit as before).
    scales = None if weights is None else budget_scales(weights, p.shape[1])
    if method == "fisher":
        if scales is not None:
            raise ValueError(
                "weights apply to method 'bonferroni', 'min' or 'mean'; Fisher's "
                "method has no weighted form here."
            )
        if p.shape[0] == 0:
            return np.empty(0)
        with np.errstate(divide="ignore"):
            return stats.combine_pvalues(p, method="fisher", axis=1).pvalue
    if method == "bonferroni":
        if scales is None:
            return np.minimum(1.0, p.shape[1] * p.min(axis=1))
        return np.minimum(1.0, (p * scales).min(axis=1))
    if method == "min":
        return (
            p.min(axis=1) if scales is None else (p * scales).min(axis=1) / len(scales)
        )
    if method == "mean":
        return p.mean(axis=1) if scales is None else p @ (1.0 / scales)
    raise ValueError(f"method must be one of {list(COMBINE_METHODS)}; got {method!r}.")


def budget_scales(weights, n_detectors):
    """``sum(weights) / weights``: each detector's p-value scale (validated).

    Detector ``j``'s p-value times its scale is below ``a`` exactly when it is
    below its share ``weights[j] / sum(weights)`` of ``a``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_detectors,):
        raise ValueError(
            f"weights must hold one weight per detector ({n_detectors}); got "
            f"shape {w.shape}."
        )
    if not (np.isfinite(w).all() and (w > 0).all()):
        raise ValueError(f"weights must be positive and finite; got {w.tolist()}.")
    return w.sum() / w


def conformal_combined_p_values(
    calibration_scores, scores, method="fisher", *, weights=None
):
    """Combined p-values of several detectors, calibrated again on benign rows.

    Each detector's score becomes a conformal p-value, the ``k`` p-values of a
    row are combined with :func:`combine_p_values`, and the combined value is
    turned into a conformal p-value in its turn, against the combined values
    of the same benign calibration rows. This keeps ``P(p <= a) <= a`` on
    benign rows however dependent the detectors are, which Fisher's method
    alone assumes away. ``"bonferroni"`` is valid as it is and is returned
    uncalibrated.

    Both steps use every calibration row: for each new row, the calibration
    rows' own p-values are computed against the calibration rows *and the
    new row* (full conformal inference over the calibration step), so the
    new row and the calibration rows are treated alike and the guarantee is
    exact. No library offers this two-stage computation, hence the code.

    Parameters
    ----------
    calibration_scores : array-like of shape (n_calibration, n_detectors)
        Each detector's scores of benign rows none was trained on.

    scores : array-like of shape (n_samples, n_detectors)
        The detectors' scores of the rows to test (higher = more benign).

    method : {"fisher", "bonferroni", "min", "mean"}, default="fisher"
        The combination.

    weights : array-like of shape (n_detectors,), default=None
        The detectors' shares of the false-positive budget (see
        :func:`combine_p_values`); None: equal.

    Returns
    -------
    p_values : ndarray of shape (n_samples,)
        Small for adversarial rows.

    Examples
    --------
    >>> import numpy as np
    >>> from skadv import conformal_combined_p_values
    >>> rng = np.random.default_rng(0)
    >>> calibration = rng.normal(size=(99, 2))
    >>> new = np.array([[-5.0, -5.0], [0.0, 0.0]])
    >>> conformal_combined_p_values(calibration, new, "fisher")
    array([0.01, 0.6 ])
    """
    cal = _check_scores(calibration_scores, "calibration_scores")
    new = _check_scores(scores, "scores")
    if cal.ndim != 2 or new.ndim != 2 or cal.shape[1] != new.shape[1]:
        raise ValueError(
            "calibration_scores and scores must be 2-D with one column per "
            f"detector; got shapes {cal.shape} and {new.shape}."
        )
    if cal.shape[0] == 0:
        raise ValueError("calibration_scores is empty: no benign row to compare with.")
    n, k = cal.shape
    member_p = np.column_stack([_p_values(cal[:, j], new[:, j]) for j in range(k)])
    combined = combine_p_values(member_p, method, weights=weights)
    if method == "bonferroni":
        return combined
    # Calibration rows' counts of calibration rows at most as benign (itself
    # included); each new row adds one when it is at most as benign too.
    counts = np.column_stack(
        [np.searchsorted(np.sort(cal[:, j]), cal[:, j], side="right") for j in range(k)]
    )
    out = np.empty(new.shape[0], dtype=np.float64)
    for start in range(0, new.shape[0], _COMBINE_CHUNK):
        chunk = new[start : start + _COMBINE_CHUNK]
        cal_p = (counts[None] + (chunk[:, None, :] <= cal[None])) / (n + 1.0)
        cal_combined = combine_p_values(
            cal_p.reshape(-1, k), method, weights=weights
        ).reshape(len(chunk), n)
        mine = combined[start : start + _COMBINE_CHUNK, None]
        out[start : start + len(chunk)] = (1.0 + (cal_combined <= mine).sum(1)) / (
            n + 1.0
        )
    return out


def predicted_classes(class_column, X):
    """The class of each row of ``X`` from a column or a callable; None without."""
    if class_column is None:
        return None
    n = _num_samples(X)
    if callable(class_column):
        classes = np.asarray(class_column(X))
        source = "class_column(X)"
    else:
        if getattr(X, "ndim", len(np.shape(X))) != 2:
            raise ValueError(
                f"class_column={class_column} reads a column of a 2-D X; got X "
                f"with shape {np.shape(X)}. Pass a callable that returns each "
                "row's class instead."
            )
        classes = np.asarray(_safe_indexing(X, class_column, axis=1))
        source = f"column {class_column} of X"
    if classes.shape != (n,):
        raise ValueError(
            f"{source} must give one class per row, shape ({n},); got shape "
            f"{classes.shape}."
        )
    if classes.dtype.kind == "f":
        if not np.array_equal(classes, np.round(classes)):
            raise ValueError(
                f"{source} must hold integer class labels; found non-integer "
                "values such as "
                f"{float(classes[classes != np.round(classes)][0])!r}."
            )
        classes = classes.astype(np.int64)
    return classes


def split_calibration(n_samples, calibration_size, contamination, classes, rng):
    """Indices of the training and calibration rows among ``n_samples`` benign rows.

    Stratified on ``classes`` when every class has at least two rows and both
    parts can hold one row of each class. Raises when the calibration part
    could never flag a row at ``contamination``.
    """
    if isinstance(calibration_size, numbers.Integral):
        n_cal = int(calibration_size)
    else:
        n_cal = math.ceil(calibration_size * n_samples)
    needed = min_calibration_rows(contamination)
    if n_cal < needed:
        raise ValueError(
            f"calibration_size={calibration_size!r} leaves {n_cal} benign "
            f"calibration rows (n_samples = {n_samples}); "
            f"contamination={contamination!r} "
            f"needs at least {needed}: with n rows the smallest p-value is "
            "1 / (n + 1), which must be below contamination. Pass more benign "
            "rows or a larger calibration_size."
        )
    if n_cal >= n_samples:
        raise ValueError(
            f"calibration_size={calibration_size!r} leaves no benign row to train "
            f"on: {n_cal} calibration rows of {n_samples}."
        )
    stratify = None
    if classes is not None:
        _, counts = np.unique(classes, return_counts=True)
        if counts.min() >= 2 and min(n_cal, n_samples - n_cal) >= counts.size:
            stratify = classes
    return train_test_split(
        np.arange(n_samples), test_size=n_cal, stratify=stratify, random_state=rng
    )


def benign_rows(X, y):
    """``X`` restricted to the rows ``y`` labels +1 (all rows when ``y`` is None)."""
    # row-indexable: sparse matrices become CSR, other sequences arrays
    X = indexable(X)[0]
    if y is None:
        rows = X
    else:
        rows = _safe_indexing(
            X, np.flatnonzero(check_detection_labels(y, _num_samples(X)))
        )
    if _num_samples(rows) == 0:
        raise ValueError("y marks no row as benign (+1): nothing to learn from.")
    return rows


def resolve_min_class_rows(min_class_rows, contamination):
    """``min_class_rows``, else the rows a p-value below contamination needs."""
    if min_class_rows is None:
        return min_calibration_rows(contamination)
    return min_class_rows


def calibration_groups(estimator, X, n):
    """``(rows, calibration rows)`` pairs of a fitted calibrated estimator.

    One pair per class with calibration rows of its own, one for the pooled
    rest (with a warning); a single pair of everything without classes.
    ``estimator`` has ``class_column``, ``calibration_classes_``,
    ``calibration_scores_`` and ``min_class_rows_``.
    """
    if estimator.calibration_classes_ is None:
        return [(np.arange(n), np.arange(len(estimator.calibration_scores_)))]
    classes = predicted_classes(estimator.class_column, X)
    warn_small_classes(
        estimator.calibration_classes_, estimator.min_class_rows_, classes
    )
    return class_groups(
        estimator.calibration_classes_, classes, estimator.min_class_rows_
    )[0]


def warn_small_classes(calibration_classes, min_class_rows, classes=None):
    """Warn about the classes whose p-values are pooled over every class.

    At fit time (``classes`` None): the calibration classes with fewer than
    ``min_class_rows`` rows. At predict time: classes of ``classes`` that
    had no calibration row at all (the small ones were named at fit time).
    """
    if calibration_classes is None:
        return
    labels, counts = np.unique(calibration_classes, return_counts=True)
    if classes is None:
        pooled = labels[counts < min_class_rows]
        if pooled.size:
            warnings.warn(
                f"Classes {pooled.tolist()[:10]} have fewer than min_class_rows="
                f"{min_class_rows} calibration rows; their p-values are computed "
                "against the calibration rows of every class (pooled), so their "
                "false-positive rate holds only on average over the classes.",
                UserWarning,
                stacklevel=3,
            )
        return
    unseen = np.setdiff1d(classes, labels)
    if unseen.size:
        warnings.warn(
            f"Classes {unseen.tolist()[:10]} had no calibration row; their "
            "p-values are computed against the calibration rows of every class "
            "(pooled).",
            UserWarning,
            stacklevel=3,
        )


_CALIBRATION_SIZE = [
    Interval(numbers.Real, 0, 1, closed="neither"),
    Interval(numbers.Integral, 1, None, closed="left"),
]
_CLASS_COLUMN = [Interval(numbers.Integral, 0, None, closed="left"), callable, None]


class ConformalDetector(OutlierMixin, MetaEstimatorMixin, BaseEstimator):
    """A detector whose threshold is a conformal p-value: a guaranteed FPR.

    Fits a clone of ``detector`` on part of the benign rows and keeps the
    scores (``score_samples``) of the held-out rest as calibration scores. A
    new row's p-value is the share of calibration rows at least as
    adversarial as it (see :func:`conformal_p_values`); rows with a p-value
    below ``contamination`` are flagged. On new benign rows exchangeable with
    the training data, at most ``contamination`` are flagged on average,
    whatever the detector and however its scores are distributed.

    The guarantee is on average over the draw of the calibration rows. With
    ``n`` calibration rows the false-positive rate that one fitted detector
    realises is Beta-distributed around ``contamination`` with a spread of
    about ``sqrt(contamination * (1 - contamination) / n)``: about 0.01 at
    0.05 with 475 rows, 0.02 with 120 (see
    :func:`calibration_fpr_distribution`). At least
    :func:`min_calibration_rows` rows (20 at 0.05) are needed for any row to
    be flagged at all; fewer is an error.

    Parameters
    ----------
    detector : estimator
        The detector to calibrate: anything with ``fit`` and ``score_samples``
        (higher = more benign), e.g. a pipeline of
        :class:`ExplanationTransformer` and
        :class:`ExplanationReconstructionDetector`, or scikit-learn's
        :class:`~sklearn.ensemble.IsolationForest`. Its own threshold
        (``contamination``) is not used. Wrapped in
        :class:`~sklearn.frozen.FrozenEstimator`, an already fitted detector is
        used as it is and every benign row passed to :meth:`fit` calibrates
        it (they must not be rows it was trained on).

    calibration_size : float in (0, 1) or int, default=0.2
        Benign rows held out from training to calibrate: a share of them, or
        a number. Ignored for a frozen ``detector``.

    contamination : float in (0, 0.5], default=0.05
        The p-value below which a row is flagged: the target false-positive
        rate.

    class_column : int, callable or None, default=None
        Source of each row's class for class-conditional ("Mondrian")
        p-values, which then hold within each class: a column of ``X`` (as
        :class:`ExplanationTransformer` writes the predicted class in column
        0), or a callable returning the class of each row of ``X`` (e.g. a
        function calling the classifier's ``predict``). None: one calibration
        set for all rows.

    min_class_rows : int, default=None
        Classes with fewer calibration rows are compared with the calibration
        rows of every class (pooled), with a warning at fit time (and at
        predict time for classes with no calibration row at all); their
        false-positive rate then holds only on average over the classes.
        ``None``: ``min_calibration_rows(contamination)``, the fewest that can
        flag a row.

    random_state : int, RandomState instance or None, default=None
        Seeds the split into training and calibration rows (stratified by
        class when classes are known). The detector's own randomness is its
        own parameter.

    Attributes
    ----------
    detector_ : estimator
        The fitted detector (``detector`` itself when frozen).

    calibration_scores_ : ndarray of shape (n_calibration,)
        ``score_samples`` of the held-out benign rows.

    calibration_classes_ : ndarray of shape (n_calibration,) or None
        Their classes, when ``class_column`` is set.

    min_class_rows_ : int
        The ``min_class_rows`` in use.

    offset_ : float
        ``contamination``: ``decision_function = p_value - offset_``.

    n_features_in_ : int
        Number of features seen by the fitted detector, when it records it.

    See Also
    --------
    EnsembleDetector : Several detectors' p-values combined.
    conformal_p_values : The p-values themselves.

    Notes
    -----
    Flagging ``p < contamination`` rather than ``p <= contamination`` keeps
    scikit-learn's convention that a decision of exactly 0 is an inlier; the
    two differ only when ``contamination * (n + 1)`` is an integer.

    References
    ----------
    .. [1] V. Vovk, A. Gammerman and G. Shafer, "Algorithmic Learning in a
       Random World", Springer, 2005.
    .. [2] S. Bates, E. Candes, L. Lei, Y. Romano and M. Sesia, "Testing for
       outliers with conformal p-values", Annals of Statistics, 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.ensemble import IsolationForest
    >>> from skadv import ConformalDetector
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 2))
    >>> detector = ConformalDetector(IsolationForest(random_state=0), random_state=0)
    >>> detector.fit(X).predict([[0.0, 0.0], [6.0, 6.0]])
    array([ 1, -1])
    >>> detector.p_value([[6.0, 6.0]])  # no calibration row is as odd
    array([0.00990099])
    """

    _parameter_constraints = {
        "detector": [HasMethods(["fit", "score_samples"])],
        "calibration_size": _CALIBRATION_SIZE,
        "contamination": [Interval(numbers.Real, 0, 0.5, closed="right")],
        "class_column": _CLASS_COLUMN,
        "min_class_rows": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        detector,
        *,
        calibration_size=0.2,
        contamination=0.05,
        class_column=None,
        min_class_rows=None,
        random_state=None,
    ):
        self.detector = detector
        self.calibration_size = calibration_size
        self.contamination = contamination
        self.class_column = class_column
        self.min_class_rows = min_class_rows
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, **fit_params):
        """Fit the detector on benign rows and calibrate it on held-out ones.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs, in whatever form ``detector`` takes.

        y : array-like of shape (n_samples,), default=None
            Optional +1 benign / -1 adversarial labels: only benign rows are
            used, for training and calibration alike. ``None``: all benign.

        **fit_params : dict
            Passed to the detector's ``fit``.

        Returns
        -------
        self : object
            The fitted detector.
        """
        X = benign_rows(X, y)
        n = _num_samples(X)
        classes = predicted_classes(self.class_column, X)
        self.min_class_rows_ = resolve_min_class_rows(
            self.min_class_rows, self.contamination
        )
        if isinstance(self.detector, FrozenEstimator):
            needed = min_calibration_rows(self.contamination)
            if n < needed:
                raise ValueError(
                    f"The frozen detector is calibrated on the {n} benign rows of "
                    f"X; contamination={self.contamination!r} needs at least "
                    f"{needed}: with n rows the smallest p-value is 1 / (n + 1), "
                    "which must be below contamination."
                )
            self.detector_ = self.detector
            calibration = np.arange(n)
        else:
            rng = check_random_state(self.random_state)
            train, calibration = split_calibration(
                n, self.calibration_size, self.contamination, classes, rng
            )
            self.detector_ = clone(self.detector).fit(
                _safe_indexing(X, train), **fit_params
            )
        self.calibration_scores_ = _check_scores(
            self.detector_.score_samples(_safe_indexing(X, calibration)),
            "The detector's calibration scores",
        )
        self.calibration_classes_ = None if classes is None else classes[calibration]
        warn_small_classes(self.calibration_classes_, self.min_class_rows_)
        self.offset_ = self.contamination
        return self

    @property
    def n_features_in_(self):
        """Number of features seen by the fitted detector."""
        check_is_fitted(self)
        return self.detector_.n_features_in_

    def p_value(self, X):
        """Conformal p-value of each row: small means adversarial.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs.

        Returns
        -------
        p_values : ndarray of shape (n_samples,)
            In ``[1 / (n + 1), 1]`` with ``n`` calibration rows (of the row's
            class, with ``class_column``).
        """
        check_is_fitted(self)
        scores = _check_scores(self.detector_.score_samples(X), "The detector's scores")
        p = np.empty(scores.shape, dtype=np.float64)
        for rows, reference in calibration_groups(self, X, len(scores)):
            p[rows] = _p_values(self.calibration_scores_[reference], scores[rows])
        return p

    def score_samples(self, X):
        """The p-value: higher for more benign rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            :meth:`p_value`.
        """
        return self.p_value(X)

    def decision_function(self, X):
        """``p_value - contamination``: negative means adversarial.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
            Negative for the rows flagged as adversarial.
        """
        return self.p_value(X) - self.offset_

    def predict(self, X):
        """Predict +1 for benign and -1 for adversarial rows (``p < contamination``).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            +1 benign, -1 adversarial.
        """
        return np.where(self.decision_function(X) < 0, -1, 1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.detector)
        tags.input_tags.allow_nan = inner.input_tags.allow_nan
        tags.input_tags.sparse = inner.input_tags.sparse
        return tags
