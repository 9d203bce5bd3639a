"""Validation shared by the estimators and the metrics."""

import numbers

import numpy as np
from sklearn.utils.validation import column_or_1d


def check_detection_labels(y, n_samples=None, *, name="y"):
    """Validate +1 (benign) / -1 (adversarial) labels; return a boolean benign mask.

    Any other label set is refused with a message that states the convention:
    0/1 labels are ambiguous (is 1 "benign" or "adversarial"?) and are never
    guessed.
    """
    y = column_or_1d(y, warn=True)
    if n_samples is not None and y.shape[0] != n_samples:
        raise ValueError(
            f"{name} has {y.shape[0]} labels but X has {n_samples} rows; they must "
            "match."
        )
    numeric = None
    if y.dtype.kind in "iuf":
        numeric = y
    elif y.dtype.kind == "O" and all(
        isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in y
    ):
        numeric = y.astype(np.float64)
    if numeric is None or not np.isin(numeric, (-1, 1)).all():
        try:
            found = np.unique(y).tolist()
        except TypeError:
            found = sorted({repr(v) for v in y})
        raise ValueError(
            f"{name} must label each row +1 (benign) or -1 (adversarial), "
            f"scikit-learn's outlier convention; got labels {found[:10]}. Labels "
            "such as 0/1 are ambiguous and are not guessed: map them to +1/-1 first."
        )
    return numeric == 1
