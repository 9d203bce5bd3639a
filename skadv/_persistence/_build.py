"""A JSON description and tensors back to fitted estimators.

Every estimator is rebuilt, recursively, from the classes the audit allows:
its parameters (with the estimators nested in them built first), then its
fitted attributes; each reconstructor with :func:`make_reconstructor` from its
stored parameters, then ``initialize()`` and its stored weights (strictly);
every estimator that runs the classifier around the caller's one. Before
anything is built, every estimator the file names is read: the reconstructor
modules are checked against the audit, and the classifier is asked for when
one of them runs it (and refused when none does).
"""

import contextlib
import copy
import warnings

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from skorch.dataset import ValidSplit

from skadv._autoencoder import make_reconstructor
from skadv._detector import ExplanationReconstructionDetector
from skadv._guarded import GuardedClassifier
from skadv._persistence._archive import WEIGHTS_NAME, weights_sha256
from skadv._persistence._audit import (
    DEFAULT_CLASSES,
    NAMED_CLASSES,
    SKADV_MODULES,
    check_attribute_name,
    check_module_allowed,
    class_from_name,
    estimator_class,
    runs_model,
)
from skadv._persistence._json_values import ESTIMATOR, ESTIMATOR_REF, from_json
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


def _build_reconstructors(description, tensors, modules, moved, prefix):
    """A fitted detector's reconstructors, with their stored weights; the
    caller checked that their modules are allowed."""
    nets = []
    head = description["weights"]
    for i, net_description in enumerate(description["reconstructors"]):
        net = _build_net(
            net_description, modules, moved, f"{prefix}reconstructors_[{i}]."
        )
        # Initialising draws random weights, overwritten at once: leave the
        # caller's torch generator where it was.
        with torch.random.fork_rng(devices=[]):
            net.initialize()
        key = f"{head}reconstructor.{i}."
        state = {
            k[len(key) :]: tensors.pop(k) for k in sorted(tensors) if k.startswith(key)
        }
        try:
            net.module_.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"the weights of reconstructor {i} do not fit its module: {exc}"
            ) from exc
        nets.append(net)
    return nets


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


def _restore_model(estimator, module, path):
    """Give a fitted estimator that runs the classifier the caller's one.

    One forward pass, so that a model that does not take the saved input
    shape fails now, with fit's message, rather than at predict time.
    """
    _place_model(estimator, module)
    if isinstance(estimator, GuardedClassifier):
        # As fit finds it: the view this skadv shares the model's pass with.
        estimator._view = estimator._find_view()
        estimator.shares_forward_pass_ = estimator._view is not None
    with _reading(path):
        n_features = int(estimator.n_features_in_)
    estimator._check_model_output(np.zeros((1, n_features), dtype=np.float32))


class _Builder:
    """Builds a description and everything nested in it.

    ``built`` maps the name of each nested estimator to the estimator, for
    references to it; ``runs_model`` lists the fitted estimators that run the
    classifier, given it once the whole tree is built.
    """

    def __init__(self, tensors, model, modules):
        self.tensors = tensors
        self.model = model
        self.modules = modules
        self.moved = []
        self.built = {}
        self.runs_model = []

    def estimator(self, tag, payload, name):
        if tag == ESTIMATOR_REF:
            if payload not in self.built:
                raise ValueError(f"{name} refers to no estimator before it")
            return self.built[payload]
        estimator = self.build(payload, f"{name}__")
        self.built[name] = estimator
        return estimator

    def value(self, value, name, prefix):
        return from_json(value, estimator=self.estimator, name=name, prefix=prefix)

    def build(self, description, prefix):
        cls = estimator_class(description["type"])
        if cls is None:
            raise ValueError(f"unknown estimator type {description['type']!r}")
        params = {}
        for key, value in sorted(description["params"].items()):
            if key == "reconstructor" and cls is ExplanationReconstructionDetector:
                params[key] = (
                    None
                    if value is None
                    else _build_net(
                        value, self.modules, self.moved, f"{prefix}reconstructor__"
                    )
                )
            else:
                params[key] = self.value(value, prefix + key, prefix)
        if "device" in params:
            params["device"] = _cpu_if_no_cuda(
                params["device"], self.moved, f"{prefix}device"
            )
        if runs_model(cls):
            params["model"] = self.model
        estimator = cls(**params)
        estimator._validate_params()
        for key, value in sorted(description["fitted"].items()):
            check_attribute_name(estimator, key)
            setattr(estimator, key, self.value(value, prefix + key, prefix))
        if "reconstructors" in description:
            if cls is not ExplanationReconstructionDetector:
                raise ValueError(f"a {cls.__name__} has no reconstructors")
            estimator.reconstructors_ = _build_reconstructors(
                description, self.tensors, self.modules, self.moved, prefix
            )
        if runs_model(cls) and "n_features_in_" in description["fitted"]:
            self.runs_model.append(estimator)
        return estimator


def _walk(value):
    """Every estimator description in a JSON value, outermost first."""
    if isinstance(value, list):
        for item in value:
            yield from _walk(item)
    elif isinstance(value, dict):
        if list(value) == [ESTIMATOR]:
            yield value[ESTIMATOR]
            value = value[ESTIMATOR]
        for item in value.values():
            yield from _walk(item)


def _upgrade_v1(description):
    """A format-version-1 description in today's layout.

    Version 1 held a pipeline's steps beside its parameters, a guard's detector
    (its fitted one) beside its parameters with a ``frozen`` flag and whether
    it shared the model's pass, and a detector's weights without a prefix.
    """
    if description["type"] == "ExplanationReconstructionDetector":
        description.setdefault("weights", "")
    elif description["type"] == "Pipeline":
        description["params"]["steps"] = [
            {"__tuple__": [step["name"], {ESTIMATOR: _upgrade_v1(step["estimator"])}]}
            for step in description.pop("steps")
        ]
        description.setdefault("fitted", {})
    elif description["type"] == "GuardedClassifier":
        detector = description.pop("detector")
        if not isinstance(detector["frozen"], bool):
            raise ValueError("the guard's detector has no boolean 'frozen'")
        inner = {ESTIMATOR: _upgrade_v1(detector["estimator"])}
        # Version 1 checked the classifier of the guard's transformer only.
        steps = inner[ESTIMATOR]["params"]["steps"]
        transformer = steps[0]["__tuple__"][1][ESTIMATOR]
        description["model_sha256"] = transformer["model_sha256"]
        if detector["frozen"]:
            frozen = {"type": "FrozenEstimator", "params": {"estimator": inner}}
            inner = {ESTIMATOR: {**frozen, "fitted": {}}}
        description["params"]["detector"] = inner
        description["fitted"]["detector_"] = {ESTIMATOR_REF: "detector"}
        description["fitted"].pop("shares_forward_pass_", None)  # found again
    return description


def _article(name):
    return "an" if name[:1] in tuple("AEIOU") else "a"


def _check_model_argument(description, runners, model, path):
    """Refuse a missing classifier when an estimator runs one, and a
    classifier that none runs.

    ``runners`` are the descriptions of the estimators that run the
    classifier, outermost first.
    """
    held = str(description["type"])
    if runners and model is None:
        what = (
            ", which runs your torch classifier"
            if runners[0] is description
            else f" whose {runners[0]['type']} runs your torch classifier"
        )
        raise ValueError(
            f"{path} holds {_article(held)} {held}{what}; a skadv file does not "
            "store the classifier's weights: pass the trained classifier: "
            "load(path, model=model)."
        )
    if not runners and model is not None:
        raise ValueError(
            f"{path} holds {_article(held)} {held}, which runs no classifier: "
            "model= is for files of estimators that run one."
        )


def build(document, tensors, *, model, modules, path):
    """Rebuild the fitted estimator a checked skadv document describes.

    ``tensors`` is consumed: every tensor must belong to a reconstructor.
    """
    with _reading(path):
        description = document["estimator"]
        if document["format_version"] == 1:
            description = _upgrade_v1(description)
        nested = [*_walk(description["params"]), *_walk(description["fitted"])]
        nets = [
            net
            for d in [description, *nested]
            if d["type"] == "ExplanationReconstructionDetector"
            for net in [d["params"]["reconstructor"], *d.get("reconstructors", [])]
            if net is not None
        ]
        module_descriptions = [
            (str(m["name"]), bool(m["skadv"]), str(m["python"]))
            for m in (net["module"] for net in nets)
        ]
        runners = [
            d
            for d in [description, *nested]
            if runs_model(estimator_class(d["type"]) or object)
        ]
        fingerprints = {str(d["model_sha256"]) for d in runners}
    _check_model_argument(description, runners, model, path)
    for module_description in module_descriptions:
        check_module_allowed(module_description, modules, path)

    builder = _Builder(tensors, model, modules)
    with _reading(path):
        estimator = builder.build(description, "")
        if tensors:
            raise ValueError(
                f"{WEIGHTS_NAME} holds tensors that no reconstructor uses, such as "
                f"{sorted(tensors)[0]!r}"
            )
    if builder.runs_model:
        module = unwrap_model(model)
        if fingerprints != {weights_sha256(module)}:
            warnings.warn(
                f"The model passed to load differs from the one {path} was saved "
                "with (the SHA-256 of its state_dict differs): the detector was "
                "calibrated on the saved model's outputs and may not suit this "
                "model's.",
                UserWarning,
                stacklevel=3,  # load's caller: load -> here
            )
        for runner in builder.runs_model:
            _restore_model(runner, module, path)
    with _reading(path):
        check_is_fitted(estimator)
    if builder.moved:
        warnings.warn(
            f"{path} was saved for CUDA ({', '.join(builder.moved)}) but CUDA is "
            "not available on this machine: loaded onto the CPU instead.",
            UserWarning,
            stacklevel=3,  # load's caller: load -> here
        )
    return estimator
