"""Datasets used to train and evaluate the classifiers and detectors.

Both loaders return images shaped ``(n_samples, 1, height, width)`` as float32
in [0, 1] and int64 targets, ready for the skorch classifiers of
:mod:`skadv.models`.
"""

from skadv.datasets._digits import load_digits
from skadv.datasets._mnist import load_mnist

__all__ = ["load_digits", "load_mnist"]
