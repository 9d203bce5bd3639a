"""Fitted estimators to a JSON description and a dict of tensors.

One description for every estimator, recursively: its class name, its
parameters and its fitted attributes as JSON values, the estimators nested in
them (a pipeline's steps, a meta-estimator's detectors, fitted or not)
described the same way in place, and an object met a second time (a guard's
fitted detector that is its ``detector``) stored as a reference to the first.
What no JSON holds is added by kind: for a reconstruction detector, each
reconstructor's skorch parameters and the *name* of its module class, with
the weights in the tensors; for an estimator that runs the classifier (views,
feature squeezing, guards), the SHA-256 of the classifier's weights, the
classifier itself not being stored.
"""

import torch
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNetRegressor
from skorch.dataset import ValidSplit

from skadv._detector import ExplanationReconstructionDetector
from skadv._persistence._archive import weights_sha256
from skadv._persistence._audit import (
    DEFAULT_CLASSES,
    NAMED_CLASSES,
    SKADV_MODULES,
    STORABLE_ESTIMATORS,
    estimator_class,
    named_class,
    rebuilt_attributes,
    runs_model,
)
from skadv._persistence._json_values import (
    ESTIMATOR,
    ESTIMATOR_REF,
    not_storable,
    to_json,
)
from skadv._torch_utils import unwrap_model


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


class _Describer:
    """Describes an estimator and everything nested in it, collecting tensors.

    ``seen`` maps each described estimator (by identity) to its name, so that
    an object met again is stored as a reference; ``model`` is the first
    classifier met (with where, and its fingerprint), which every other
    estimator must share (load takes one).
    """

    def __init__(self):
        self.tensors = {}
        self.seen = {}
        self.model = None

    def estimator(self, estimator, name):
        """The JSON of an estimator nested at ``name``: its description or a
        reference to where it was described."""
        if id(estimator) in self.seen:
            return {ESTIMATOR_REF: self.seen[id(estimator)][0]}
        # The estimator is kept with its name: its id stays its own meanwhile.
        self.seen[id(estimator)] = (name, estimator)
        return {ESTIMATOR: self.describe(estimator, f"{name}__", name)}

    def value(self, value, name, prefix, kind="parameter"):
        return to_json(value, name, kind, estimator=self.estimator, prefix=prefix)

    def describe(self, estimator, prefix, name):
        """The description of ``estimator``, whose parameters are named
        ``prefix + key``."""
        cls = type(estimator)
        if estimator_class(cls.__name__) is not cls:
            raise not_storable(name, estimator, STORABLE_ESTIMATORS)
        params = estimator.get_params(deep=False)
        stored = {}
        for key, value in sorted(params.items()):
            if key == "model" and runs_model(cls):
                continue  # passed back to load
            if key == "reconstructor" and cls is ExplanationReconstructionDetector:
                stored[key] = (
                    None if value is None else _describe_net(value, prefix + key)
                )
            else:
                stored[key] = self.value(value, prefix + key, prefix)
        description = {
            "type": cls.__name__,
            "params": stored,
            "fitted": {
                key: self.value(value, prefix + key, prefix, kind="fitted attribute")
                for key, value in sorted(vars(estimator).items())
                if key not in params and key not in rebuilt_attributes(cls)
            },
        }
        if runs_model(cls):
            description["model_sha256"] = self._model_sha256(estimator, name)
        if cls is ExplanationReconstructionDetector and hasattr(
            estimator, "reconstructors_"
        ):
            description.update(self._reconstructors(estimator, prefix))
        return description

    def _model_sha256(self, estimator, name):
        module = unwrap_model(estimator.model)
        label = repr(name) if name else f"the {type(estimator).__name__} saved"
        if self.model is None:
            self.model = (module, label, weights_sha256(module))
        elif module is not self.model[0]:
            raise ValueError(
                "save stores estimators that all run one classifier (load takes "
                f"one model): {label} runs another model than {self.model[1]}."
            )
        return self.model[2]

    def _reconstructors(self, detector, prefix):
        """A detector's reconstructors: their parameters, and their weights in
        ``tensors`` under ``weights`` + ``reconstructor.{i}.``."""
        nets = []
        for i, net in enumerate(detector.reconstructors_):
            nets.append(_describe_net(net, f"{prefix}reconstructors_[{i}]"))
            for key, tensor in net.module_.state_dict().items():
                if not isinstance(tensor, torch.Tensor):
                    raise ValueError(
                        f"Cannot save {prefix}reconstructors_[{i}]: its state_dict "
                        f"holds a non-tensor entry {key!r}, which safetensors "
                        "cannot store."
                    )
                # A copy on the CPU: safetensors refuses tensors that share memory.
                self.tensors[f"{prefix}reconstructor.{i}.{key}"] = (
                    tensor.detach().to("cpu", copy=True).contiguous()
                )
        return {"weights": prefix, "reconstructors": nets}


def describe(estimator):
    """Return (description, tensors) of a fitted estimator and what it holds."""
    cls = type(estimator)
    if estimator_class(cls.__name__) is not cls:
        raise ValueError(
            f"save stores fitted {STORABLE_ESTIMATORS}; got {cls.__name__}."
        )
    check_is_fitted(estimator)
    describer = _Describer()
    description = describer.describe(estimator, "", "")
    return description, describer.tensors
