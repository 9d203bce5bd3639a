"""Fitted estimators to a JSON description and a dict of tensors.

A detector is described by its parameters, its fitted attributes and, for
each reconstructor, the skorch parameters and the *name* of its module class;
the reconstructors' weights go to the tensors. A pipeline adds its
transformer's parameters, fitted attributes and the SHA-256 of its
classifier's weights (the classifier itself is not stored). A guard adds its
own parameters and fitted attributes around the description of its pipeline.
"""

import torch
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNetRegressor
from skorch.dataset import ValidSplit

from skadv._detector import ExplanationReconstructionDetector
from skadv._explain import ExplanationTransformer
from skadv._guarded import GuardedClassifier
from skadv._persistence._archive import weights_sha256
from skadv._persistence._audit import (
    DEFAULT_CLASSES,
    NAMED_CLASSES,
    REBUILT_ATTRIBUTES,
    SKADV_MODULES,
    named_class,
)
from skadv._persistence._json_values import not_storable, to_json
from skadv._torch_utils import unwrap_model

_PIPELINE = (
    "a fitted Pipeline of an ExplanationTransformer then an "
    "ExplanationReconstructionDetector"
)
_SUPPORTED = (
    f"save stores a fitted ExplanationReconstructionDetector, {_PIPELINE}, or a "
    "fitted GuardedClassifier around such a Pipeline"
)


def _describe_attributes(estimator, prefix):
    """The fitted state of an estimator: every attribute that is no parameter."""
    params = estimator.get_params(deep=False)
    return {
        name: to_json(value, prefix + name, kind="fitted attribute")
        for name, value in sorted(vars(estimator).items())
        if name not in params and name not in REBUILT_ATTRIBUTES[type(estimator)]
    }


def _describe_module(module, name):
    if not (isinstance(module, type) and issubclass(module, torch.nn.Module)):
        raise not_storable(name, module, "a torch.nn.Module class")
    return {
        "name": module.__name__,
        "skadv": SKADV_MODULES.get(module.__name__) is module,
        "python": f"{module.__module__}.{module.__qualname__}",
    }


def _describe_net(net, name):
    """Parameters of a skorch reconstructor, without its weights."""
    if type(net) is not NeuralNetRegressor:
        raise not_storable(
            name, net, "skorch.NeuralNetRegressor reconstructors (make_reconstructor)"
        )
    params = net.get_params(deep=False)
    module = _describe_module(params.pop("module"), f"{name}__module")
    stored = {}
    for key, value in sorted(params.items()):
        full_name = f"{name}__{key}"
        if key.startswith("_"):  # skorch's bookkeeping, not a parameter
            continue
        if key in NAMED_CLASSES:
            stored[key] = named_class(value, key, full_name)
        elif key in DEFAULT_CLASSES:
            if value is not DEFAULT_CLASSES[key]:
                default = DEFAULT_CLASSES[key]
                raise not_storable(
                    full_name, value, f"the default {key} ({default.__qualname__})"
                )
        elif key == "train_split" and type(value) is ValidSplit:
            stored[key] = {
                "ValidSplit": {
                    k: to_json(getattr(value, k), full_name)
                    for k in ("cv", "stratified", "random_state")
                }
            }
        else:
            stored[key] = to_json(value, full_name)
    return {"module": module, "params": stored}


def _describe_params(estimator, prefix, skip=()):
    return {
        key: to_json(value, prefix + key)
        for key, value in sorted(estimator.get_params(deep=False).items())
        if key not in skip
    }


def _describe_detector(detector, prefix):
    """Return (description, tensors) of a fitted detector."""
    check_is_fitted(detector)
    params = _describe_params(detector, prefix, skip=("reconstructor",))
    template = detector.reconstructor
    params["reconstructor"] = (
        None if template is None else _describe_net(template, f"{prefix}reconstructor")
    )
    nets, tensors = [], {}
    for i, net in enumerate(detector.reconstructors_):
        nets.append(_describe_net(net, f"{prefix}reconstructors_[{i}]"))
        for key, tensor in net.module_.state_dict().items():
            if not isinstance(tensor, torch.Tensor):
                raise ValueError(
                    f"Cannot save reconstructors_[{i}]: its state_dict holds a "
                    f"non-tensor entry {key!r}, which safetensors cannot store."
                )
            # A copy on the CPU: safetensors refuses tensors that share memory.
            tensors[f"reconstructor.{i}.{key}"] = (
                tensor.detach().to("cpu", copy=True).contiguous()
            )
    description = {
        "type": "ExplanationReconstructionDetector",
        "params": params,
        "fitted": _describe_attributes(detector, prefix),
        "reconstructors": nets,
    }
    return description, tensors


def _describe_transformer(transformer, prefix):
    check_is_fitted(transformer)
    return {
        "type": "ExplanationTransformer",
        "params": _describe_params(transformer, prefix, skip=("model",)),
        "fitted": _describe_attributes(transformer, prefix),
        "model_sha256": weights_sha256(unwrap_model(transformer.model)),
    }


def _is_supported_pipeline(estimator):
    return (
        type(estimator) is Pipeline
        and len(estimator.steps) == 2
        and type(estimator.steps[0][1]) is ExplanationTransformer
        and type(estimator.steps[1][1]) is ExplanationReconstructionDetector
    )


def _describe_pipeline(pipeline, prefix):
    """Return (description, tensors) of a supported fitted pipeline."""
    (t_name, transformer), (d_name, detector) = pipeline.steps
    check_is_fitted(transformer)
    check_is_fitted(detector)
    t_description = _describe_transformer(transformer, f"{prefix}{t_name}__")
    d_description, tensors = _describe_detector(detector, f"{prefix}{d_name}__")
    description = {
        "type": "Pipeline",
        "params": _describe_params(pipeline, prefix, skip=("steps",)),
        "steps": [
            {"name": t_name, "estimator": t_description},
            {"name": d_name, "estimator": d_description},
        ],
    }
    return description, tensors


def _describe_guard(guard):
    """Return (description, tensors) of a fitted guard around a supported pipeline.

    The guard's ``detector`` parameter is not stored apart from ``detector_``:
    a loaded guard holds its fitted detector in both, as a guard given a
    fitted detector does.
    """
    check_is_fitted(guard)
    detector = guard.detector_
    frozen = type(detector) is FrozenEstimator
    pipeline = detector.estimator if frozen else detector
    if not _is_supported_pipeline(pipeline):
        raise ValueError(
            f"save stores a GuardedClassifier whose detector is {_PIPELINE} (or "
            "such a Pipeline in a FrozenEstimator); got a GuardedClassifier around "
            f"{type(pipeline).__name__}."
        )
    if unwrap_model(pipeline.steps[0][1].model) is not unwrap_model(guard.model):
        raise ValueError(
            "save stores a GuardedClassifier whose ExplanationTransformer explains "
            "the guard's own model (load takes one model for both); this guard's "
            "detector explains another model."
        )
    prefix = "detector__estimator__" if frozen else "detector__"
    p_description, tensors = _describe_pipeline(pipeline, prefix)
    description = {
        "type": "GuardedClassifier",
        "params": _describe_params(guard, "", skip=("model", "detector")),
        "fitted": _describe_attributes(guard, ""),
        "detector": {"frozen": frozen, "estimator": p_description},
    }
    return description, tensors


def describe(estimator):
    """Return (description, tensors) of a supported fitted estimator."""
    if type(estimator) is ExplanationReconstructionDetector:
        return _describe_detector(estimator, "")
    if type(estimator) is GuardedClassifier:
        return _describe_guard(estimator)
    if not _is_supported_pipeline(estimator):
        raise ValueError(f"{_SUPPORTED}; got {type(estimator).__name__}.")
    return _describe_pipeline(estimator, "")
