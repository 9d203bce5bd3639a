"""Adversarial example generation for PyTorch classifiers.

:func:`make_adversarial` runs the standard attacks of IBM's
adversarial-robustness-toolbox (install with ``pip install "skadv[attacks]"``).
The detector-aware attacks, which no attack library ships, are skadv's own:
:func:`make_adaptive_adversarial` (orthogonal and selective PGD through the
explanation map), :func:`make_square_adversarial` (a gradient-free search on
the exact scores), :func:`adaptive_attack_suite` (best-of over methods,
surrogates, targets and restarts: the strongest attack skadv has) and
:func:`evaluate_robustness` (plain and adaptive attacks against a detector's
fixed threshold).
"""

from skadv.attacks._adaptive import (
    adaptive_attack_suite,
    make_adaptive_adversarial,
    make_surrogate,
)
from skadv.attacks._art import ATTACKS, make_adversarial
from skadv.attacks._robustness import evaluate_robustness
from skadv.attacks._square import make_square_adversarial

__all__ = [
    "ATTACKS",
    "adaptive_attack_suite",
    "evaluate_robustness",
    "make_adaptive_adversarial",
    "make_adversarial",
    "make_square_adversarial",
    "make_surrogate",
]
