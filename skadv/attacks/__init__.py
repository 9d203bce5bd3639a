"""Adversarial example generation for PyTorch classifiers.

:func:`make_adversarial` runs the standard attacks of IBM's
adversarial-robustness-toolbox (install with ``pip install "skadv[attacks]"``);
:func:`make_adaptive_adversarial` attacks the classifier and its
explanation-based detector together, which no attack library does.
"""

from skadv.attacks._adaptive import make_adaptive_adversarial
from skadv.attacks._art import ATTACKS, make_adversarial

__all__ = ["ATTACKS", "make_adaptive_adversarial", "make_adversarial"]
