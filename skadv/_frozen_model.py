"""FrozenModelMixin: what every estimator that runs the user's trained model shares,
and the model pass that several of them read at once."""

import contextlib
import copy
import io
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import validate_data

from skadv._torch_utils import (
    eval_mode,
    module_device_dtype,
    on_cuda,
    resolve_device,
    unwrap_model,
)

MODEL_PARAMETER_CONSTRAINTS = {
    "model": [object],
    "input_shape": [tuple, list, None],
    "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
    "device": [str, torch.device, None],
}


def returns_probabilities(model):
    """Whether ``model`` is a skorch classifier whose module returns probabilities.

    skorch's ``NeuralNetClassifier`` with its default ``NLLLoss`` criterion
    expects its module to return probabilities, not logits.
    """
    criterion = getattr(model, "criterion_", None)
    return isinstance(criterion, torch.nn.NLLLoss) and hasattr(model, "module_")


class FrozenModelMixin:
    """Handling of a trained, frozen torch classifier run on raw inputs.

    What every estimator that runs the user's model shares: the model is never
    trained, cloning shares it (scikit-learn's clone would deep-copy a torch
    module and re-initialise a skorch net), its own parameters are not listed
    by ``get_params``, a model on CUDA pickles so that it loads on a CPU-only
    machine, and inputs are validated (flat or shaped, ``input_shape``) and
    passed to the model in batches of ``batch_size``.

    Subclasses declare ``model``, ``input_shape``, ``batch_size`` and
    ``device`` parameters and call :meth:`_fit_model` at the start of ``fit``.
    """

    def __sklearn_clone__(self):
        params = self.get_params(deep=False)
        model = params.pop("model")
        cloned = type(self)(
            model=model, **{k: clone(v, safe=False) for k, v in params.items()}
        )
        if hasattr(self, "_sklearn_output_config"):
            cloned._sklearn_output_config = copy.deepcopy(self._sklearn_output_config)
        return cloned

    def get_params(self, deep=True):
        """Get the parameters of this estimator.

        The model's own parameters are never listed (``deep`` is ignored for
        it): the model is trained and frozen, and clones share it, so setting
        ``model__lr`` on one would change every clone's and the user's model.

        Parameters
        ----------
        deep : bool, default=True
            Ignored; present for API consistency.

        Returns
        -------
        params : dict
            Parameter names mapped to their values.
        """
        return super().get_params(deep=False)

    def set_params(self, **params):
        """Set the parameters of this estimator.

        Parameters
        ----------
        **params : dict
            Estimator parameters. The model's own parameters (``model__*``)
            are refused: the model is frozen and shared by clones.

        Returns
        -------
        self : object
            This estimator.
        """
        nested = sorted(k for k in params if k.startswith("model__"))
        if nested:
            raise ValueError(
                f"Invalid parameter {nested[0]!r}: {type(self).__name__} treats its "
                "model as trained and frozen (clones share it), so its parameters "
                "cannot be set through it; pass another model instead."
            )
        return super().set_params(**params)

    def __getstate__(self):
        # A copy: BaseEstimator.__getstate__ may return the live __dict__.
        state = dict(super().__getstate__())
        cuda_modules = {
            k: state.pop(k)
            for k in ("model", "module_")
            if isinstance(state.get(k), torch.nn.Module) and on_cuda(state[k])
        }
        if cuda_modules:
            # As skorch does for its nets: keep CUDA tensors in a torch.save
            # blob so that a CPU-only machine can map them to the CPU on load.
            buffer = io.BytesIO()
            torch.save(cuda_modules, buffer)
            state["_cuda_modules"] = buffer.getvalue()
        return state

    def __setstate__(self, state):
        blob = state.pop("_cuda_modules", None)
        if blob is not None:
            cuda = torch.cuda.is_available()
            modules = torch.load(
                io.BytesIO(blob),
                map_location=None if cuda else "cpu",
                weights_only=False,
            )
            state.update(modules)
            if not cuda and "device_" in state:
                warnings.warn(
                    f"This {type(self).__name__} was pickled with a model on CUDA, "
                    "which is not available here: the model was loaded on the CPU.",
                    UserWarning,
                    stacklevel=2,
                )
                state["device_"] = torch.device("cpu")
        super().__setstate__(state)

    def _fit_model(self, X):
        """Resolve the module and device, validate ``X``, record the input shape.

        Returns ``X`` validated as a 2-D float32 array.
        """
        module = unwrap_model(self.model)
        model_device, _ = module_device_dtype(module)
        device = resolve_device(self.device)
        if device is None or device == model_device:
            self.module_ = module
            self.device_ = model_device
        else:
            # A copy: the user's model stays where it is.
            self.module_ = copy.deepcopy(module).to(device)
            self.device_ = device
        self._probabilities = returns_probabilities(self.model)
        X, sample_shape = self._validate_input(X, reset=True)
        self.input_shape_ = self._check_input_shape(X, sample_shape)
        self._check_model_output(X[:1])
        return X

    def _check_input_shape(self, X, sample_shape):
        if self.input_shape is None:
            return sample_shape if sample_shape is not None else (X.shape[1],)
        shape = tuple(self.input_shape)
        if not shape or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
            for v in shape
        ):
            raise ValueError(
                "input_shape must be a tuple of positive integers such as "
                f"(1, 28, 28); got {self.input_shape!r}."
            )
        shape = tuple(int(v) for v in shape)
        if int(np.prod(shape)) != X.shape[1]:
            raise ValueError(
                f"input_shape={shape} holds {int(np.prod(shape))} values but "
                f"each input in X has {X.shape[1]}."
            )
        if sample_shape is not None and sample_shape != shape:
            raise ValueError(
                f"X has inputs of shape {sample_shape} but input_shape={shape}."
            )
        return shape

    def _check_model_output(self, X_one):
        """One forward pass, so that a model/input mismatch fails here, clearly."""
        _, dtype = module_device_dtype(self.module_)
        probe = torch.tensor(X_one, dtype=dtype, device=self.device_)
        try:
            with torch.no_grad(), eval_mode(self.module_):
                logits = self.module_(probe.reshape(-1, *self.input_shape_))
        except Exception as exc:
            raise ValueError(
                f"model failed on inputs of shape {self.input_shape_} "
                f"({type(exc).__name__}: {exc}). Pass X as (n_samples, C, H, W) "
                "or set input_shape to the shape one input has for the model."
            ) from exc
        if isinstance(logits, (tuple, list, dict)):
            first = (
                "[0]" if not isinstance(logits, dict) else f"[{next(iter(logits))!r}]"
            )
            raise ValueError(
                "model must return a tensor of logits of shape (n_samples, "
                f"n_classes); it returned a {type(logits).__name__} of "
                f"{len(logits)} items. Wrap it in a module whose forward returns "
                f"the logits only, e.g. `return model(x){first}`."
            )
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise ValueError(
                "model must return logits of shape (n_samples, n_classes); got "
                f"{getattr(logits, 'shape', type(logits).__name__)}."
            )

    def _validate_input(self, X, *, reset):
        """Flatten (n, *shape) inputs and validate them as a 2-D float32 array.

        Returns the validated array and the shape of one input (None for 2-D X).
        """
        sample_shape = None
        if isinstance(X, (list, tuple)):
            X = np.asarray(X)
        fitted_shape = tuple(getattr(self, "input_shape_", ()))
        if (
            not reset
            and len(fitted_shape) > 1
            and getattr(X, "shape", None) == (fitted_shape)
        ):
            raise ValueError(
                f"X has shape {fitted_shape}, the shape of one input: add a batch "
                "axis, X[None]."
            )
        if getattr(X, "ndim", 2) > 2:
            X = np.asarray(X)
            sample_shape = tuple(int(s) for s in X.shape[1:])
            X = X.reshape(X.shape[0], int(np.prod(sample_shape)))
        # float64 values beyond float32's range become inf in the cast, which
        # validate_data then names; numpy's own cast warning adds nothing.
        with np.errstate(over="ignore", invalid="ignore"):
            X = validate_data(self, X, dtype=np.float32, order="C", reset=reset)
        if not reset and sample_shape is not None and sample_shape != self.input_shape_:
            raise ValueError(
                f"X has inputs of shape {sample_shape}, but {type(self).__name__} "
                f"was fitted on inputs of shape {self.input_shape_}."
            )
        return X, sample_shape

    def _batches(self, X):
        """Yield ``(start, stop, batch)``: validated rows as model-shaped tensors."""
        _, dtype = module_device_dtype(self.module_)
        for start in range(0, X.shape[0], self.batch_size):
            stop = min(start + self.batch_size, X.shape[0])
            # torch.tensor copies: read-only inputs stay untouched.
            batch = torch.tensor(X[start:stop], dtype=dtype, device=self.device_)
            yield start, stop, batch.reshape(stop - start, *self.input_shape_)

    def _pass_request(self):
        """What this estimator reads off a :class:`ModelPass`, as its keywords.

        ``None``: it cannot read a shared pass and runs the model on its own
        (:func:`shared_transforms` then calls its ``transform``).
        """
        return None

    def _pass_rows(self, model_pass, start):
        """Output rows (a float32 array) of the batch of ``model_pass``.

        ``start`` is the index of the batch's first row in ``X``, for errors.
        """
        raise NotImplementedError

    def _as_logits(self, output):
        """The model's output as logits (the log of a probability output)."""
        if self._probabilities:
            # log(p) are logits whose softmax gives p back; the constant is
            # skorch's own (NeuralNetClassifier.get_loss).
            return torch.log(output + torch.finfo(output.dtype).eps)
        return output


class ModelPass:
    """One forward pass of a model on a batch, and at most one backward pass.

    What the views read: the model's outputs and predicted classes, the
    activations of named layers (captured by forward hooks during the same
    forward pass) and, with ``gradient``, the gradient of each input's
    predicted-class output with respect to the input (the saliency map). Built
    once per batch and read by every view of the same model, so an ensemble of
    views costs one pass of the model, not one per view.

    Parameters
    ----------
    module : torch.nn.Module
        The model, already in the mode it should run in.

    batch : torch.Tensor
        Model-shaped inputs.

    gradient : bool, default=False
        Also compute ``input_gradient`` (one backward pass).

    layers : iterable of (str, bool), default=()
        ``(name, capture_input)`` pairs: the input (True) or output (False) of
        the submodule ``name`` is kept in ``activations[(name, capture_input)]``
        (its last call's, if it runs more than once); a layer that does not
        run is missing from ``activations``.

    create_graph : bool, default=False
        Keep the graph of ``input_gradient`` (attacks differentiate it).
    """

    def __init__(self, module, batch, *, gradient=False, layers=(), create_graph=False):
        layers = sorted(set(layers))
        self.activations = {}
        handles = []
        for name, capture_input in layers:

            def hook(_module, inputs, output, key=(name, capture_input)):
                self.activations[key] = inputs[0] if key[1] else output

            handles.append(module.get_submodule(name).register_forward_hook(hook))
        if gradient and not batch.requires_grad:  # the map is a gradient: it needs one
            batch = batch.detach().requires_grad_()
        self.inputs = batch
        try:
            with torch.enable_grad() if gradient else contextlib.nullcontext():
                self.outputs = module(batch)
        finally:
            for handle in handles:
                handle.remove()
        self.predicted = self.outputs.argmax(dim=1)
        self.input_gradient = None
        if gradient:
            # The gradient captum's Saliency computes (the sum's gradient is
            # each input's own, as inputs do not interact in eval mode).
            chosen = self.outputs.gather(1, self.predicted[:, None]).sum()
            (self.input_gradient,) = torch.autograd.grad(
                chosen, batch, create_graph=create_graph
            )


def shared_transforms(transformers, X):
    """``[t.transform(X) for t in transformers]``, one model pass per batch.

    Fitted transformers of the same model (the same module on the same device,
    with the same input shape and batch size) that can read a shared
    :class:`ModelPass` (``_pass_request`` is not None) are computed together:
    one forward pass of each batch, with the hooks all of them need, and one
    backward pass when any needs the input gradient. Each output is the one
    its own ``transform`` returns (the same batches through the same model:
    equal bit for bit on the CPU, which the tests check). The others run on
    their own.

    Parameters
    ----------
    transformers : list of fitted FrozenModelMixin transformers
        Views of a model (``ExplanationTransformer``, ``RawInputTransformer``,
        ``ActivationTransformer``...).

    X : array-like of shape (n_samples, ...)
        Inputs.

    Returns
    -------
    outputs : list of ndarray
        Each transformer's output, in order.
    """
    outputs = [None] * len(transformers)
    groups = {}
    for i, transformer in enumerate(transformers):
        request = transformer._pass_request()
        if request is None:
            outputs[i] = transformer.transform(X)
            continue
        key = (
            id(transformer.module_),
            transformer.device_,
            tuple(transformer.input_shape_),
            transformer.batch_size,
        )
        groups.setdefault(key, []).append((i, request))
    for group in groups.values():
        if len(group) == 1:
            i = group[0][0]
            outputs[i] = transformers[i].transform(X)
            continue
        members = [transformers[i] for i, _ in group]
        # Each one validates X (feature names, widths) as its transform would.
        X_valid = [t._validate_input(X, reset=False)[0] for t in members][0]
        request = {
            "gradient": any(r.get("gradient", False) for _, r in group),
            "layers": {layer for _, r in group for layer in r.get("layers", ())},
        }
        lead = members[0]
        group_outputs = [None] * len(members)
        with eval_mode(lead.module_):
            for start, stop, batch in lead._batches(X_valid):
                model_pass = ModelPass(lead.module_, batch, **request)
                for j, transformer in enumerate(members):
                    rows = transformer._pass_rows(model_pass, start)
                    if group_outputs[j] is None:
                        group_outputs[j] = np.empty(
                            (X_valid.shape[0], rows.shape[1]), dtype=np.float32
                        )
                    group_outputs[j][start:stop] = rows
        for (i, _), output in zip(group, group_outputs, strict=True):
            outputs[i] = output
    return outputs
