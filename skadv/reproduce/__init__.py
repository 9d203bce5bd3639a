"""Reproduction of Ko & Lim (2021) on MNIST, and the studies that go past it.

:func:`reproduce` (``skadv reproduce`` on the command line) runs the paper's
protocol with skadv's public estimators and writes the results as JSON, a
Figure-2 style plot and markdown tables.
"""

from skadv.reproduce._study import reproduce

__all__ = ["reproduce"]
