"""Torch classifiers and seeded skorch wrappers to train them.

The modules return logits and use :class:`torch.nn.ReLU` modules, so captum's
gradient-based explanations (guided backpropagation, DeepLift) can hook them.
"""

from skadv.models._classifier import (
    SeededNeuralNetClassifier,
    make_classifier,
    make_digits_classifier,
    make_mnist_classifier,
)
from skadv.models._cnn import DigitsCNN, MnistCNN

__all__ = [
    "DigitsCNN",
    "MnistCNN",
    "SeededNeuralNetClassifier",
    "make_classifier",
    "make_digits_classifier",
    "make_mnist_classifier",
]
