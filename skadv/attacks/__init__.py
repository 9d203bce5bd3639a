"""Adversarial example generation for PyTorch classifiers (backed by ART).

Install the optional dependency with ``pip install "skadv[attacks]"``.
"""

from skadv.attacks._art import ATTACKS, make_adversarial

__all__ = ["ATTACKS", "make_adversarial"]
