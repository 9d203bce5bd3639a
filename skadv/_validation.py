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


def split_class_column(X, class_column, *, part, single):
    """Split validated rows into (integer class labels or None, the other columns).

    ``class_column`` holds the predicted class that the views write in column
    0. ``part`` names one of the other values in messages (``"map value"``,
    ``"feature"``); ``single`` says what ``class_column=None`` does instead
    (``"use a single autoencoder"``).
    """
    if class_column is None:
        return None, X
    if class_column >= X.shape[1] or X.shape[1] < 2:
        raise ValueError(
            f"class_column={class_column} is out of range for X with {X.shape[1]} "
            f"columns (one class column plus at least one {part})."
        )
    column = X[:, class_column]
    if np.abs(column).max(initial=0) >= 2.0**63:
        raise ValueError(
            f"class_column={class_column} must hold integer class labels; found "
            "values beyond the int64 range such as "
            f"{float(column[np.abs(column) >= 2.0**63][0])!r}."
        )
    if not np.array_equal(column, np.round(column)):
        bad = float(column[column != np.round(column)][0])
        raise ValueError(
            f"class_column={class_column} must hold integer class labels (the "
            "predicted class that the views write in column 0); found non-integer "
            f"values such as {bad!r}. Pass class_column=None to {single} without a "
            "class column."
        )
    # The other columns as a view when they are contiguous (the class in the
    # first or last column, as the views write it): no copy of the maps. A
    # read-only X (e.g. from pandas) is copied: torch warns on read-only arrays.
    if X.flags.writeable and class_column == 0:
        rest = X[:, 1:]
    elif X.flags.writeable and class_column == X.shape[1] - 1:
        rest = X[:, :-1]
    else:
        rest = np.delete(X, class_column, axis=1)
    return column.astype(np.int64), rest
