"""A JSON description and tensors back to fitted estimators.

Every estimator is rebuilt from skadv's classes: each reconstructor with
:func:`make_reconstructor` from its stored parameters, then ``initialize()``
and its stored weights (strictly); a pipeline's transformer, and a guard,
around the caller's classifier. The reconstructor modules are checked against the audit
before anything is built.
"""

import contextlib
import copy
import warnings

import numpy as np
import torch
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted
from skorch.dataset import ValidSplit

from skadv._autoencoder import make_reconstructor
from skadv._detector import ExplanationReconstructionDetector
from skadv._explain import ExplanationTransformer
from skadv._guarded import GuardedClassifier
from skadv._persistence._archive import WEIGHTS_NAME, weights_sha256
from skadv._persistence._audit import (
    DEFAULT_CLASSES,
    NAMED_CLASSES,
    SKADV_MODULES,
    check_attribute_name,
    check_module_allowed,
    class_from_name,
)
from skadv._persistence._json_values import from_json
from skadv._torch_utils import module_device_dtype, resolve_device, unwrap_model


@contextlib.contextmanager
def _reading(path):
    """Turn what a malformed description breaks into one clear ValueError.

    The checksums passed, so the file was written like this on purpose (or by
    a broken writer): it is refused, but never trusted further.
    """
    try:
        yield
    except (
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        ValueError,
        RuntimeError,  # torch refusing a module's description
    ) as exc:
        raise ValueError(
            f"{path} is not a valid skadv file: {type(exc).__name__}: {exc}"
        ) from exc


def _cpu_if_no_cuda(device, moved, name):
    """Replace a CUDA device by the CPU on a machine without CUDA."""
    if device is None or device == "auto" or torch.cuda.is_available():
        return device
    try:
        on_cuda = torch.device(device).type == "cuda"
    except (RuntimeError, TypeError):
        return device  # left to the estimators' own validation
    if on_cuda:
        moved.append(f"{name}={str(device)!r}")
        return "cpu"
    return device


def _set_attributes(estimator, attributes):
    for name, value in attributes.items():
        check_attribute_name(estimator, name)
        setattr(estimator, name, from_json(value))


def _net_descriptions(description):
    """The descriptions of a detector's template and fitted reconstructors."""
    template = description["params"]["reconstructor"]
    nets = list(description["reconstructors"])
    return nets if template is None else [template, *nets]


def _build_net(description, modules, moved, name):
    module_name = description["module"]["name"]
    in_skadv = description["module"]["skadv"]
    module = SKADV_MODULES[module_name] if in_skadv else modules[module_name]
    params = {}
    for key, value in description["params"].items():
        if key in NAMED_CLASSES:
            params[key] = class_from_name(value, key)
        elif key == "train_split" and isinstance(value, dict):
            params[key] = ValidSplit(**from_json(value["ValidSplit"]))
        elif key in DEFAULT_CLASSES or key.startswith("_"):
            raise ValueError(f"unexpected reconstructor parameter {key!r}")
        else:
            params[key] = from_json(value)
    if "device" in params:
        params["device"] = _cpu_if_no_cuda(params["device"], moved, f"{name}device")
    return make_reconstructor(module, **params)


def _build_detector(description, tensors, modules, moved, prefix):
    """Rebuild a fitted detector; the caller checked its modules are allowed."""
    params = dict(description["params"])
    template = params.pop("reconstructor")
    if template is not None:
        template = _build_net(template, modules, moved, f"{prefix}reconstructor__")
    params = {k: from_json(v) for k, v in params.items()}
    params["device"] = _cpu_if_no_cuda(params.get("device"), moved, f"{prefix}device")
    detector = ExplanationReconstructionDetector(reconstructor=template, **params)
    detector._validate_params()

    nets = []
    for i, net_description in enumerate(description["reconstructors"]):
        net = _build_net(
            net_description, modules, moved, f"{prefix}reconstructors_[{i}]."
        )
        # Initialising draws random weights, overwritten at once: leave the
        # caller's torch generator where it was.
        with torch.random.fork_rng(devices=[]):
            net.initialize()
        head = f"reconstructor.{i}."
        state = {
            k[len(head) :]: tensors.pop(k)
            for k in sorted(tensors)
            if k.startswith(head)
        }
        try:
            net.module_.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"the weights of reconstructor {i} do not fit its module: {exc}"
            ) from exc
        nets.append(net)

    _set_attributes(detector, description["fitted"])
    detector.reconstructors_ = nets
    check_is_fitted(detector)
    return detector


def _place_model(estimator, module):
    """What fit does, without data: use the model where it is, or a copy on the
    requested device."""
    model_device, _ = module_device_dtype(module)
    device = resolve_device(estimator.device)
    if device is None or device == model_device:
        estimator.module_, estimator.device_ = module, model_device
    else:
        estimator.module_ = copy.deepcopy(module).to(device)
        estimator.device_ = device


def _build_transformer(description, model, moved, path, prefix):
    """Rebuild a fitted transformer around the caller's model, without data."""
    with _reading(path):
        params = {k: from_json(v) for k, v in description["params"].items()}
        params["device"] = _cpu_if_no_cuda(
            params.get("device"), moved, f"{prefix}device"
        )
        transformer = ExplanationTransformer(model, **params)
        transformer._validate_params()
        _set_attributes(transformer, description["fitted"])
        saved_sha256 = description["model_sha256"]
        n_features = int(transformer.n_features_in_)

    module = unwrap_model(model)
    if weights_sha256(module) != saved_sha256:
        warnings.warn(
            f"The model passed to load differs from the one {path} was saved with "
            "(the SHA-256 of its state_dict differs): the detector was calibrated "
            "on the saved model's explanations and may not suit this model's.",
            UserWarning,
            stacklevel=4,  # load's caller: load -> build -> here
        )
    _place_model(transformer, module)
    # One forward pass, so that a model that does not take the saved input
    # shape fails now, with fit's message, rather than at predict time.
    transformer._check_model_output(np.zeros((1, n_features), dtype=np.float32))
    return transformer


def _build_guard(description, detector, model, moved, path):
    """Rebuild a fitted guard around the caller's model and its loaded detector.

    The caller checked the model's fingerprint with the pipeline's transformer,
    which explains the same model.
    """
    with _reading(path):
        params = {k: from_json(v) for k, v in description["params"].items()}
        params["device"] = _cpu_if_no_cuda(params.get("device"), moved, "device")
        if description["detector"]["frozen"]:
            detector = FrozenEstimator(detector)
        guard = GuardedClassifier(model, detector, **params)
        guard._validate_params()
        _set_attributes(guard, description["fitted"])
        guard.detector_ = detector
        n_features = int(guard.n_features_in_)
    _place_model(guard, unwrap_model(model))
    guard._view = guard._find_view()
    with _reading(path):
        if guard.shares_forward_pass_ is not (guard._view is not None):
            raise ValueError("shares_forward_pass_ does not match the guard's detector")
    # As for the transformer: a model that does not take the saved input shape
    # fails now, with fit's message.
    guard._check_model_output(np.zeros((1, n_features), dtype=np.float32))
    return guard


def _read_kind(description):
    """(pipeline step names or None, detector description, transformer
    description or None, guard description or None) of a description."""
    guard_description = None
    if description["type"] == "GuardedClassifier":
        guard_description = description
        if not isinstance(description["detector"]["frozen"], bool):
            raise ValueError("the guard's detector has no boolean 'frozen'")
        description = description["detector"]["estimator"]
        if description["type"] != "Pipeline":
            raise ValueError("the guard's detector is not a Pipeline")
    kind = description["type"]
    if kind == "ExplanationReconstructionDetector":
        return None, description, None, None
    if kind != "Pipeline":
        raise ValueError(f"unknown estimator type {kind!r}")
    (t_step, d_step) = description["steps"]
    t_description, d_description = t_step["estimator"], d_step["estimator"]
    if t_description["type"] != "ExplanationTransformer":
        raise ValueError("the first step is not an ExplanationTransformer")
    if d_description["type"] != "ExplanationReconstructionDetector":
        raise ValueError("the last step is not a detector")
    step_names = (t_step["name"], d_step["name"])
    return step_names, d_description, t_description, guard_description


def build(document, tensors, *, model, modules, path):
    """Rebuild the fitted estimator a checked skadv document describes.

    ``tensors`` is consumed: every tensor must belong to a reconstructor.
    """
    with _reading(path):
        description = document["estimator"]
        step_names, d_description, t_description, g_description = _read_kind(
            description
        )
        if g_description is not None:
            description = g_description["detector"]["estimator"]
            frozen = g_description["detector"]["frozen"]
            guard_prefix = "detector__estimator__" if frozen else "detector__"
        else:
            guard_prefix = ""
        module_descriptions = [
            (str(m["name"]), bool(m["skadv"]), str(m["python"]))
            for m in (n["module"] for n in _net_descriptions(d_description))
        ]
    for module_description in module_descriptions:
        check_module_allowed(module_description, modules, path)
    if step_names is None and model is not None:
        raise ValueError(
            f"{path} holds an ExplanationReconstructionDetector, which needs no "
            "model: model= is for pipeline files only."
        )
    if g_description is not None and model is None:
        raise ValueError(
            f"{path} holds a GuardedClassifier, which serves your torch classifier, "
            "whose weights a skadv file does not store: pass the trained "
            "classifier: load(path, model=model)."
        )
    if step_names is not None and model is None:
        raise ValueError(
            f"{path} holds a Pipeline whose ExplanationTransformer explains the "
            "predictions of your torch classifier, whose weights a skadv file "
            "does not store: pass the trained classifier: load(path, model=model)."
        )

    moved = []
    prefix = "" if step_names is None else f"{guard_prefix}{step_names[1]}__"
    with _reading(path):
        detector = _build_detector(d_description, tensors, modules, moved, prefix)
        if tensors:
            raise ValueError(
                f"{WEIGHTS_NAME} holds tensors that no reconstructor uses, such as "
                f"{sorted(tensors)[0]!r}"
            )
        pipeline_params = (
            None
            if step_names is None
            else {k: from_json(v) for k, v in description["params"].items()}
        )
    if step_names is None:
        estimator = detector
    else:
        transformer = _build_transformer(
            t_description, model, moved, path, f"{guard_prefix}{step_names[0]}__"
        )
        with _reading(path):
            estimator = Pipeline(
                [(step_names[0], transformer), (step_names[1], detector)],
                **pipeline_params,
            )
    if g_description is not None:
        estimator = _build_guard(g_description, estimator, model, moved, path)
    if moved:
        warnings.warn(
            f"{path} was saved for CUDA ({', '.join(moved)}) but CUDA is not "
            "available on this machine: loaded onto the CPU instead.",
            UserWarning,
            stacklevel=3,  # load's caller: load -> here
        )
    return estimator
