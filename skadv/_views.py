"""Views of an input through a frozen torch classifier: the raw input and the
activations of a layer, each after the predicted class.

A view writes the layout the detectors read: column 0 holds the model's
predicted class (as float32), the other columns the view's features.
"""

import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import (
    _check_feature_names_in,
    check_is_fitted,
)

from skadv._frozen_model import (
    MODEL_PARAMETER_CONSTRAINTS,
    FrozenModelMixin,
    ModelPass,
)
from skadv._torch_utils import (
    differentiable_attention,
    eval_mode,
    reduce_bit_depth_straight_through,
)


class BaseView(FrozenModelMixin, TransformerMixin, BaseEstimator):
    """A transformer that writes the predicted class, then a view of each input.

    Subclasses implement :meth:`_read_pass`, which reads the predicted classes
    and the view's features off a :class:`ModelPass` of a batch (built with
    the keywords of :meth:`_pass_request`: the layers to hook), and set
    ``_feature_prefix`` (the output columns are ``"predicted_class"``, then
    ``f"{_feature_prefix}{i}"``). Views of the same model share one pass in
    :func:`shared_transforms`.
    """

    _feature_prefix = "feature"

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
        request = self._pass_request()
        with eval_mode(self.module_), torch.no_grad():
            for start, stop, batch in self._batches(X):
                rows = self._pass_rows(ModelPass(self.module_, batch, **request), start)
                if out is None:
                    out = np.empty((X.shape[0], rows.shape[1]), np.float32)
                out[start:stop] = rows
        return out

    def _pass_request(self):
        return {}

    def _pass_rows(self, model_pass, start):
        predicted, features = self._read_pass(model_pass)
        features = features.detach().flatten(1)
        if not torch.isfinite(features).all():
            row = start + int(torch.nonzero(~torch.isfinite(features).all(dim=1))[0, 0])
            raise ValueError(
                f"The {self._feature_prefix} features of X[{row}] are not "
                "finite: X holds values far outside the model's input range."
            )
        rows = np.empty((features.shape[0], 1 + features.shape[1]), np.float32)
        rows[:, 0] = predicted.cpu().numpy()
        rows[:, 1:] = features.float().cpu().numpy()
        return rows

    def _read_pass(self, model_pass):
        """Return ``(predicted, features)`` tensors read off a :class:`ModelPass`."""
        raise NotImplementedError

    def torch_transform(self, X, *, module=None):
        """:meth:`transform` of a torch tensor, with its graph kept.

        The same computation as :meth:`transform` on a tensor on ``device_``,
        differentiable in ``X`` through the features, for attacks that
        differentiate a detector's score through the view.

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, C, H, W) or (n_samples, n_features)
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
        with eval_mode(module), differentiable_attention():
            predicted, features = self._read_pass(
                ModelPass(module, x, **self._pass_request())
            )
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

    bit_depth : int in [1, 16] or None, default=None
        Write the input rounded to ``2 ** bit_depth`` levels in [0, 1] (the
        model still sees the input itself). ``1`` binarises at 0.5: a small
        L-infinity perturbation of a mostly black-and-white image (MNIST)
        then changes only the few pixels near 0.5, so the detector sees
        nearly the original image. For attacks, ``torch_transform``
        rounds in the forward pass and passes gradients straight through, so
        an attacker is told about the rounding.

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

    _parameter_constraints = {
        **MODEL_PARAMETER_CONSTRAINTS,
        "bit_depth": [Interval(numbers.Integral, 1, 16, closed="both"), None],
    }
    _feature_prefix = "input"

    def __init__(
        self, model, *, input_shape=None, bit_depth=None, batch_size=256, device=None
    ):
        self.model = model
        self.input_shape = input_shape
        self.bit_depth = bit_depth
        self.batch_size = batch_size
        self.device = device

    def _read_pass(self, model_pass):
        predicted, batch = model_pass.predicted, model_pass.inputs
        if self.bit_depth is None:
            return predicted, batch
        if batch.numel() and (batch.min() < 0 or batch.max() > 1):
            raise ValueError(
                f"bit_depth={self.bit_depth} rounds inputs in [0, 1], but X holds "
                f"values in [{float(batch.detach().min()):.4g}, "
                f"{float(batch.detach().max()):.4g}]: "
                "scale the inputs to [0, 1] or use bit_depth=None."
            )
        return predicted, reduce_bit_depth_straight_through(batch, self.bit_depth)


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

    def _pass_request(self):
        return {"layers": [(self.layer_, self._capture_input)]}

    def _read_pass(self, model_pass):
        batch = model_pass.inputs
        activations = model_pass.activations.get((self.layer_, self._capture_input))
        if activations is None:
            raise ValueError(
                f"layer {self.layer_!r} did not run in the model's forward pass: "
                "choose a module that the forward pass calls."
            )
        if isinstance(activations, (tuple, list)):
            activations = activations[0]
        if not isinstance(activations, torch.Tensor) or (
            activations.ndim == 0 or activations.shape[0] != batch.shape[0]
        ):
            raise ValueError(
                f"layer {self.layer_!r} must output a tensor with one row per "
                f"input; got {getattr(activations, 'shape', type(activations))}."
            )
        return model_pass.predicted, activations.reshape(batch.shape[0], -1)
