"""Views of an input through a frozen torch classifier: the raw input and the
activations of a layer, each after the predicted class.

A view writes the layout the detectors read: column 0 holds the model's
predicted class (as float32), the other columns the view's features.
"""

import copy
import io
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import (
    _check_feature_names_in,
    check_is_fitted,
    validate_data,
)

from skadv._torch_utils import (
    eval_mode,
    module_device_dtype,
    on_cuda,
    resolve_device,
    unwrap_model,
)


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

    def _as_logits(self, output):
        """The model's output as logits (the log of a probability output)."""
        if self._probabilities:
            # log(p) are logits whose softmax gives p back; the constant is
            # skorch's own (NeuralNetClassifier.get_loss).
            return torch.log(output + torch.finfo(output.dtype).eps)
        return output


class BaseView(FrozenModelMixin, TransformerMixin, BaseEstimator):
    """A transformer that writes the predicted class, then a view of each input.

    Subclasses implement :meth:`_view_batch`, which maps a batch of model-shaped
    inputs to the predicted classes and the view's flat features, and set
    ``_feature_prefix`` (the output columns are ``"predicted_class"``, then
    ``f"{_feature_prefix}{i}"``). ``_needs_grad`` turns autograd on for views
    that differentiate the model (explanations).
    """

    _feature_prefix = "feature"
    _needs_grad = False

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Validate the model and the inputs; the model is not trained.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Inputs in the model's own input range.

        y : None
            Ignored; present for API consistency (e.g. +1/-1 labels in a
            pipeline are passed on to the detector).

        Returns
        -------
        self : object
            The fitted transformer.
        """
        X = self._fit_model(X)
        self._fit_view(X)
        return self

    def _fit_view(self, X):
        """Fit what the view itself needs; records the number of view features."""
        self._n_view_features = self._view(X[:1]).shape[1] - 1

    def transform(self, X):
        """The predicted class of each input, then its view.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Inputs in the model's own input range.

        Returns
        -------
        Xt : ndarray of shape (n_samples, 1 + n_view_features), dtype float32
            Column 0 holds the predicted class, the other columns the view.
        """
        check_is_fitted(self)
        X, _ = self._validate_input(X, reset=False)
        return self._view(X)

    def _view(self, X):
        """Rows of validated 2-D inputs, batch by batch."""
        out = None
        with eval_mode(self.module_), torch.set_grad_enabled(self._needs_grad):
            for start, stop, batch in self._batches(X):
                predicted, features = self._view_batch(batch, self.module_)
                features = features.detach().flatten(1)
                if not torch.isfinite(features).all():
                    row = start + int(
                        torch.nonzero(~torch.isfinite(features).all(dim=1))[0, 0]
                    )
                    raise ValueError(
                        f"The {self._feature_prefix} features of X[{row}] are not "
                        "finite: X holds values far outside the model's input range."
                    )
                if out is None:
                    out = np.empty((X.shape[0], 1 + features.shape[1]), np.float32)
                out[start:stop, 0] = predicted.cpu().numpy()
                out[start:stop, 1:] = features.float().cpu().numpy()
        return out

    def _view_batch(self, batch, module):
        """Return ``(predicted, features)`` tensors for one batch of inputs."""
        raise NotImplementedError

    def torch_transform(self, X, *, module=None):
        """:meth:`transform` of a torch tensor, with its graph kept.

        The same computation as :meth:`transform` on a tensor on ``device_``,
        differentiable in ``X`` through the features, for attacks that
        differentiate a detector's score through the view.

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, *input_shape_) or \
                (n_samples, n_features)
            Inputs.

        module : torch.nn.Module, default=None
            The network to run instead of ``module_`` (e.g. a surrogate with the
            same forward values and submodule names); None: ``module_``.

        Returns
        -------
        Xt : torch.Tensor of shape (n_samples, 1 + n_view_features)
            Predicted class (not differentiable), then the view's features.
        """
        check_is_fitted(self)
        module = self.module_ if module is None else module
        x = X.reshape(X.shape[0], *self.input_shape_)
        predicted, features = self._view_batch(x, module)
        features = features.flatten(1).float()
        return torch.cat([predicted[:, None].to(features.dtype), features], dim=1)

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only validated against the names seen in ``fit``.

        Returns
        -------
        feature_names_out : ndarray of str objects
            ``"predicted_class"``, then one name per view feature.
        """
        check_is_fitted(self)
        _check_feature_names_in(self, input_features, generate_names=False)
        names = ["predicted_class"] + [
            f"{self._feature_prefix}{i}" for i in range(self._n_view_features)
        ]
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


# The parameters every view shares, for subclasses' _parameter_constraints.
MODEL_PARAMETER_CONSTRAINTS = {
    "model": [object],
    "input_shape": [tuple, list, None],
    "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
    "device": [str, torch.device, None],
}


class RawInputTransformer(BaseView):
    """The predicted class of each input, then the flattened input itself.

    The raw-input view: with :class:`ExplanationReconstructionDetector` after
    it, one autoencoder per predicted class learns what benign inputs of that
    class look like (MagNet-style detection [1]_), so an input the model puts
    in a class it does not resemble is reconstructed badly. The model is only
    run for its prediction.

    The model is treated as frozen: ``fit`` validates the inputs and records
    their shape but never trains or modifies the model, and cloning the
    transformer shares the model instead of copying it.

    Parameters
    ----------
    model : torch.nn.Module or skorch.NeuralNetClassifier
        A trained classifier whose forward pass returns logits (or, for a
        skorch net with ``NLLLoss``, probabilities: the arg-max is the same).
        A fitted skorch net is unwrapped to its ``module_``. It is run in eval
        mode, one batch at a time, and its modes are restored afterwards. Its
        own parameters are not exposed through ``get_params``.

    input_shape : tuple of int, default=None
        Shape of one input as the model expects it, e.g. ``(1, 28, 28)``, when
        ``X`` is passed flat as ``(n_samples, n_features)``. ``None``: inputs
        of ndim > 2 keep their own shape, flat inputs are passed to the model
        as they are.

    batch_size : int, default=256
        Inputs per forward pass; bounds the memory used.

    device : str or torch.device, default=None
        Where to run the model: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``
        (CUDA when available). ``None`` uses the device the model is on. A
        model on another device is copied there, never moved.

    Attributes
    ----------
    module_ : torch.nn.Module
        The module that computes the predictions (the model itself, or its
        copy on ``device``).

    device_ : torch.device
        The device used.

    input_shape_ : tuple of int
        Shape of one input as passed to the model.

    n_features_in_ : int
        Number of features of one (flattened) input.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    ActivationTransformer : The activations of a hidden layer instead.
    ExplanationTransformer : The explanation map instead.
    ExplanationReconstructionDetector : Per-class autoencoders on any view.

    References
    ----------
    .. [1] D. Meng and H. Chen, "MagNet: a Two-Pronged Defense against
       Adversarial Examples", ACM CCS 2017, arXiv:1705.09064.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skadv import RawInputTransformer
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    >>> X = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    >>> Xt = RawInputTransformer(model).fit_transform(X)
    >>> Xt.shape, Xt.dtype
    ((5, 65), dtype('float32'))
    >>> bool(np.array_equal(Xt[:, 1:], X.reshape(5, 64)))
    True
    """

    _parameter_constraints = dict(MODEL_PARAMETER_CONSTRAINTS)
    _feature_prefix = "input"

    def __init__(self, model, *, input_shape=None, batch_size=256, device=None):
        self.model = model
        self.input_shape = input_shape
        self.batch_size = batch_size
        self.device = device

    def _view_batch(self, batch, module):
        return module(batch).argmax(dim=1), batch


def _last_linear(module):
    """Name of the last ``torch.nn.Linear`` in ``named_modules`` order, or None."""
    names = [n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    return names[-1] if names else None


class ActivationTransformer(BaseView):
    """The predicted class of each input, then a hidden layer's activations.

    The activation view: the features the model computes in one of its layers,
    captured with a forward hook during the same forward pass that gives the
    prediction. By default the input of the model's last ``torch.nn.Linear``
    layer (the penultimate features), the features on which Lee et al.'s
    class-conditional Gaussian detector works (see
    :class:`ClassConditionalGaussianDetector`).

    The model is treated as frozen: ``fit`` validates the inputs and records
    their shape but never trains or modifies the model, and cloning the
    transformer shares the model instead of copying it.

    Parameters
    ----------
    model : torch.nn.Module or skorch.NeuralNetClassifier
        A trained classifier whose forward pass returns logits (or, for a
        skorch net with ``NLLLoss``, probabilities: the arg-max is the same).
        A fitted skorch net is unwrapped to its ``module_``. It is run in eval
        mode, one batch at a time, and its modes are restored afterwards. Its
        own parameters are not exposed through ``get_params``.

    layer : str, default=None
        Name of the module whose output is captured, as listed by
        ``model.named_modules()`` (e.g. ``"fc1"``, ``"features.3"``); the
        output is flattened per input. If the module runs more than once in a
        forward pass, its last output is kept. ``None``: the input of the last
        ``torch.nn.Linear`` module in ``named_modules()`` order.

    input_shape : tuple of int, default=None
        Shape of one input as the model expects it, e.g. ``(1, 28, 28)``, when
        ``X`` is passed flat as ``(n_samples, n_features)``. ``None``: inputs
        of ndim > 2 keep their own shape, flat inputs are passed to the model
        as they are.

    batch_size : int, default=256
        Inputs per forward pass; bounds the memory used.

    device : str or torch.device, default=None
        Where to run the model: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``
        (CUDA when available). ``None`` uses the device the model is on. A
        model on another device is copied there, never moved.

    Attributes
    ----------
    layer_ : str
        Name of the module whose activations are captured: its input when
        ``layer`` is None, its output otherwise.

    module_ : torch.nn.Module
        The module that computes the activations (the model itself, or its
        copy on ``device``).

    device_ : torch.device
        The device used.

    input_shape_ : tuple of int
        Shape of one input as passed to the model.

    n_features_in_ : int
        Number of features of one (flattened) input.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    ClassConditionalGaussianDetector : Mahalanobis distances on this view.
    RawInputTransformer : The raw input instead.
    ExplanationTransformer : The explanation map instead.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skadv import ActivationTransformer
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
    ...     torch.nn.Linear(16, 10))
    >>> X = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    >>> transformer = ActivationTransformer(model).fit(X)
    >>> transformer.layer_  # the last Linear, whose input is captured
    '3'
    >>> transformer.transform(X).shape
    (5, 17)
    >>> ActivationTransformer(model, layer="1").fit_transform(X).shape
    (5, 17)
    """

    _parameter_constraints = {
        **MODEL_PARAMETER_CONSTRAINTS,
        "layer": [str, None],
    }
    _feature_prefix = "activation"

    def __init__(
        self, model, *, layer=None, input_shape=None, batch_size=256, device=None
    ):
        self.model = model
        self.layer = layer
        self.input_shape = input_shape
        self.batch_size = batch_size
        self.device = device

    def _fit_view(self, X):
        modules = dict(self.module_.named_modules())
        if self.layer is None:
            layer = _last_linear(self.module_)
            if layer is None:
                raise ValueError(
                    "layer=None captures the input of the model's last "
                    "torch.nn.Linear module, but the model has none; pass the name "
                    "of a module from model.named_modules() as layer."
                )
        elif self.layer in modules and self.layer != "":
            layer = self.layer
        else:
            names = [n for n in modules if n]
            shown = ", ".join(repr(n) for n in names[:30])
            more = f" and {len(names) - 30} more" if len(names) > 30 else ""
            raise ValueError(
                f"layer={self.layer!r} is not a module of the model; valid layer "
                f"names (from model.named_modules()) are: {shown}{more}."
            )
        self.layer_ = layer
        self._capture_input = self.layer is None
        super()._fit_view(X)

    def _view_batch(self, batch, module):
        captured = []
        capture_input = self._capture_input

        def hook(module, inputs, output):
            captured.append(inputs[0] if capture_input else output)

        target = module.get_submodule(self.layer_)
        handle = target.register_forward_hook(hook)
        try:
            logits = module(batch)
        finally:
            handle.remove()
        if not captured:
            raise ValueError(
                f"layer {self.layer_!r} did not run in the model's forward pass: "
                "choose a module that the forward pass calls."
            )
        activations = captured[-1]
        if isinstance(activations, (tuple, list)):
            activations = activations[0]
        if not isinstance(activations, torch.Tensor) or (
            activations.ndim == 0 or activations.shape[0] != batch.shape[0]
        ):
            raise ValueError(
                f"layer {self.layer_!r} must output a tensor with one row per "
                f"input; got {getattr(activations, 'shape', type(activations))}."
            )
        return logits.argmax(dim=1), activations.reshape(batch.shape[0], -1)
