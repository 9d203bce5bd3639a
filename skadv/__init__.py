"""skadv: detect adversarial inputs to PyTorch classifiers from their explanations.

The two estimators follow scikit-learn's API:

- :class:`ExplanationTransformer` turns inputs into saliency maps with a trained
  torch classifier (captum underneath);
- :class:`ExplanationReconstructionDetector` learns what benign maps look like with
  one skorch autoencoder per predicted class, and flags the maps it cannot
  reconstruct (Ko & Lim, 2021).
"""

__version__ = "0.1.0.dev0"

from skadv._autoencoder import (
    ConvAutoencoder,
    MLPAutoencoder,
    make_reconstructor,
)
from skadv._conditional import (
    ConditionalConvAutoencoder,
    ConditionalMLPAutoencoder,
    make_conditional_reconstructor,
)
from skadv._conformal import (
    ConformalDetector,
    calibration_fpr_distribution,
    combine_p_values,
    conformal_combined_p_values,
    conformal_p_values,
    min_calibration_rows,
)
from skadv._detector import ExplanationReconstructionDetector
from skadv._detector_classifier import DetectorClassifier
from skadv._ensemble import EnsembleDetector
from skadv._explain import ExplanationTransformer
from skadv._gaussian import ClassConditionalGaussianDetector
from skadv._guarded import GuardedClassifier
from skadv._persistence import load, save
from skadv._presets import list_presets, make_detector
from skadv._squeezing import FeatureSqueezingDetector
from skadv._streaming import score_in_chunks
from skadv._views import ActivationTransformer, RawInputTransformer

__all__ = [
    "ActivationTransformer",
    "ClassConditionalGaussianDetector",
    "ConditionalConvAutoencoder",
    "ConditionalMLPAutoencoder",
    "ConformalDetector",
    "ConvAutoencoder",
    "DetectorClassifier",
    "EnsembleDetector",
    "ExplanationReconstructionDetector",
    "ExplanationTransformer",
    "FeatureSqueezingDetector",
    "GuardedClassifier",
    "MLPAutoencoder",
    "RawInputTransformer",
    "__version__",
    "calibration_fpr_distribution",
    "combine_p_values",
    "conformal_combined_p_values",
    "conformal_p_values",
    "list_presets",
    "make_conditional_reconstructor",
    "load",
    "make_detector",
    "make_reconstructor",
    "min_calibration_rows",
    "save",
    "score_in_chunks",
]

# Subpackages load on first attribute access (``skadv.attacks``), as in
# scikit-learn and SciPy, so that ``import skadv`` stays light.
_SUBPACKAGES = ("attacks", "datasets", "metrics", "models", "plotting", "reproduce")


def __getattr__(name):
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"skadv.{name}")
    raise AttributeError(f"module 'skadv' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_SUBPACKAGES})
