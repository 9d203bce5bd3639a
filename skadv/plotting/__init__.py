"""Plots of inputs, explanations and reconstruction errors.

matplotlib is an optional dependency (``pip install "skadv[plot]"``); it is
imported only when a plot is drawn, so importing this module never needs it.
"""

from skadv.plotting._plot import ReconstructionErrorDisplay, plot_explanations

__all__ = ["ReconstructionErrorDisplay", "plot_explanations"]
