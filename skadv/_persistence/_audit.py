"""What a skadv file may name, and the checks that hold it to that.

A file names classes, never code: estimators among skadv's own, scikit-learn's
``Pipeline`` and ``FrozenEstimator`` and the covariance estimators of
``sklearn.covariance``; reconstructor modules among skadv's own autoencoders
or the classes the caller passes to ``load(modules=...)``; losses and
optimizers by an attribute look-up in ``torch.nn`` and ``torch.optim`` checked
against a base class; and fitted attributes that are plain data. Saving stores
a class only under a name that loading finds again.
"""

import re

import sklearn.covariance
import torch
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from skorch.dataset import Dataset as _SkorchDataset
from torch.utils.data import DataLoader

from skadv._autoencoder import ConvAutoencoder, MLPAutoencoder
from skadv._conditional import ConditionalConvAutoencoder, ConditionalMLPAutoencoder
from skadv._conformal import ConformalDetector
from skadv._detector import ExplanationReconstructionDetector
from skadv._detector_classifier import DetectorClassifier
from skadv._ensemble import EnsembleDetector
from skadv._explain import ExplanationTransformer
from skadv._frozen_model import FrozenModelMixin
from skadv._gaussian import ClassConditionalGaussianDetector
from skadv._guarded import GuardedClassifier
from skadv._persistence._json_values import not_storable
from skadv._squeezing import FeatureSqueezingDetector
from skadv._views import ActivationTransformer, RawInputTransformer

SKADV_MODULES = {
    cls.__name__: cls
    for cls in (
        MLPAutoencoder,
        ConvAutoencoder,
        ConditionalMLPAutoencoder,
        ConditionalConvAutoencoder,
    )
}

# The estimators a file may name, by class name: every estimator skadv ships
# and the scikit-learn compositions that hold them.
ESTIMATORS = {
    cls.__name__: cls
    for cls in (
        ActivationTransformer,
        ClassConditionalGaussianDetector,
        ConformalDetector,
        DetectorClassifier,
        EnsembleDetector,
        ExplanationReconstructionDetector,
        ExplanationTransformer,
        FeatureSqueezingDetector,
        GuardedClassifier,
        RawInputTransformer,
        FrozenEstimator,
        Pipeline,
    )
}
# ClassConditionalGaussianDetector's covariance_estimator: one of these.
_COVARIANCE_BASE = sklearn.covariance.EmpiricalCovariance
STORABLE_ESTIMATORS = (
    "skadv's estimators, scikit-learn's Pipeline and FrozenEstimator of them, and "
    "the covariance estimators of sklearn.covariance"
)

# Class-valued skorch parameters stored by name and resolved, on load, only by
# an attribute look-up on these namespaces, checked against a base class.
NAMED_CLASSES = {
    "criterion": (torch.nn, torch.nn.modules.loss._Loss, "a loss class of torch.nn"),
    "optimizer": (torch.optim, torch.optim.Optimizer, "an optimizer of torch.optim"),
}
# Class-valued skorch parameters that can only be saved at their default.
DEFAULT_CLASSES = {
    "iterator_train": DataLoader,
    "iterator_valid": DataLoader,
    "dataset": _SkorchDataset,
}
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_ATTRIBUTE = re.compile(r"_?[A-Za-z][A-Za-z0-9_]*")


def estimator_class(name):
    """The estimator class a file names, or None when it may not name it."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        return None
    if name in ESTIMATORS:
        return ESTIMATORS[name]
    cls = getattr(sklearn.covariance, name, None)
    if isinstance(cls, type) and issubclass(cls, _COVARIANCE_BASE):
        return cls
    return None


def runs_model(cls):
    """Whether estimators of ``cls`` run the user's classifier (not stored)."""
    return issubclass(cls, FrozenModelMixin)


def rebuilt_attributes(cls):
    """Fitted attributes rebuilt on load rather than read from the file."""
    rebuilt = set()
    if issubclass(cls, ExplanationReconstructionDetector):
        rebuilt |= {"reconstructors_"}  # from the weights
    if runs_model(cls):
        rebuilt |= {"module_", "device_"}  # the model passed to load
    if issubclass(cls, GuardedClassifier):
        # Found again in the loaded detector, as fit finds them.
        rebuilt |= {"_view", "shares_forward_pass_"}
    return rebuilt


# --------------------------------------------------------------------------
# Saving


def named_class(value, key, name):
    """The name under which a loss or optimizer class is stored.

    Only a class that loading finds again by name in its namespace is stored.
    """
    namespace, base, what = NAMED_CLASSES[key]
    class_name = getattr(value, "__name__", None)
    if not (
        isinstance(value, type)
        and issubclass(value, base)
        and getattr(namespace, str(class_name), None) is value
    ):
        raise not_storable(name, value, f"{what} (by name) for {key}")
    return class_name


# --------------------------------------------------------------------------
# Loading


def check_modules(modules):
    """Validate load's ``modules``: class names to torch module classes."""
    if modules is None:
        return {}
    if not isinstance(modules, dict) or not all(
        isinstance(name, str)
        and isinstance(cls, type)
        and issubclass(cls, torch.nn.Module)
        for name, cls in modules.items()
    ):
        raise TypeError(
            "modules must map class names (str) to torch.nn.Module classes, e.g. "
            f"{{'MyAutoencoder': MyAutoencoder}}; got {modules!r}."
        )
    return modules


def check_module_allowed(module, modules, path):
    """Refuse a reconstructor module that is neither skadv's nor passed in."""
    name, in_skadv, python_name = module
    if (in_skadv and name in SKADV_MODULES) or (not in_skadv and name in modules):
        return
    raise ValueError(
        f"{path} uses the reconstructor module {name!r} (saved from "
        f"{python_name}), which is not one of skadv's: pass the class to load if "
        f"you trust it, e.g. load(path, modules={{{name!r}: {name}}})."
    )


def class_from_name(name, key):
    """The loss or optimizer class a file names, looked up in its namespace."""
    namespace, base, what = NAMED_CLASSES[key]
    value = (
        getattr(namespace, name, None)
        if isinstance(name, str) and _IDENTIFIER.fullmatch(name)
        else None
    )
    if not (isinstance(value, type) and issubclass(value, base)):
        raise ValueError(f"{key} {name!r} is not {what}")
    return value


def check_attribute_name(estimator, name):
    """Refuse to set anything but a plain data attribute from a file."""
    # Never a parameter, a method, a property or a dunder of the class.
    if (
        not _ATTRIBUTE.fullmatch(name)
        or name.endswith("__")
        or name in estimator.get_params(deep=False)
        or name in rebuilt_attributes(type(estimator))
        or hasattr(type(estimator), name)
    ):
        raise ValueError(f"refusing to set attribute {name!r}")
