"""ExplanationTransformer: inputs to saliency maps with a trained torch classifier."""

import warnings
import zlib

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils.validation import (
    _check_feature_names_in,
    check_is_fitted,
    check_memory,
)

from skadv._frozen_model import (
    MODEL_PARAMETER_CONSTRAINTS,
    FrozenModelMixin,
    ModelPass,
)
from skadv._scoring import normalize_attributions
from skadv._torch_utils import (
    array_digest,
    differentiable_attention,
    eval_mode,
    model_fingerprint,
    needs_key,
)

METHODS = (
    "saliency",
    "input_x_gradient",
    "integrated_gradients",
    "smoothgrad",
    "guided_backprop",
    "deeplift",
)

# Methods whose attribution is one forward and one backward pass at the input
# itself: the predicted class can be read off that same forward pass.
_SINGLE_PASS_METHODS = frozenset({"saliency", "input_x_gradient", "guided_backprop"})

_DEFAULT_METHOD_PARAMS = {
    "saliency": {"abs": False},
    "smoothgrad": {"nt_samples": 10, "stdevs": 0.15, "abs": False},
    "integrated_gradients": {"n_steps": 32},
}


# Activation modules, and those whose backward pass a method rewrites
# (captum's GuidedBackprop: ReLU only; DeepLift: its list of non-linearities).
_ACTIVATIONS = (
    torch.nn.ReLU,
    torch.nn.ReLU6,
    torch.nn.LeakyReLU,
    torch.nn.ELU,
    torch.nn.SELU,
    torch.nn.CELU,
    torch.nn.GELU,
    torch.nn.SiLU,
    torch.nn.Mish,
    torch.nn.Softplus,
    torch.nn.Hardswish,
    torch.nn.Hardsigmoid,
    torch.nn.Sigmoid,
    torch.nn.Tanh,
)
_METHOD_ACTIVATIONS = {
    "guided_backprop": (torch.nn.ReLU,),
    "deeplift": (torch.nn.ReLU, torch.nn.ELU, torch.nn.Sigmoid, torch.nn.Tanh),
}


class _PredictedClassLogit(torch.nn.Module):
    """The logit of the predicted class, as a scalar per input.

    Captum needs the target class before its forward pass; explaining the
    predicted class would then cost one forward pass more. Gathering the
    arg-max logit inside the forward pass gives the prediction and the gradient
    of its logit in a single forward and backward pass.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.predicted = None

    def forward(self, x):
        logits = self.model(x)
        predicted = logits.argmax(dim=1)
        self.predicted = predicted.detach()
        return logits.gather(1, predicted[:, None]).squeeze(1)


def _explain_cached(transformer, key, X):
    # Module-level for joblib.Memory; ``key`` (which holds a digest of ``X``)
    # is the cache key.
    return transformer._explain(X)


class ExplanationTransformer(FrozenModelMixin, TransformerMixin, BaseEstimator):
    """Explain a trained torch classifier's predictions as saliency maps.

    Each input is explained for the class the model predicts for it, with one
    of captum's attribution methods. The output row is the predicted class
    followed by the flattened, normalised attribution map, which is what
    :class:`ExplanationReconstructionDetector` expects.

    The model is treated as frozen: ``fit`` validates the inputs and records
    their shape but never trains or modifies the model, and cloning the
    transformer (as ``GridSearchCV`` does) shares the model instead of copying
    it, so ``Pipeline(memory=...)`` can cache explanations.

    Parameters
    ----------
    model : torch.nn.Module or skorch.NeuralNetClassifier
        A trained classifier whose forward pass returns logits (a fitted skorch
        net is unwrapped to its ``module_``; with skorch's default ``NLLLoss``
        the module returns probabilities, and the maps explain those). It is
        put in eval mode while explaining, one explanation at a time, and its
        modes are restored afterwards. Its own parameters are not exposed
        through ``get_params``.

    method : {"saliency", "input_x_gradient", "integrated_gradients", \
            "smoothgrad", "guided_backprop", "deeplift"}, default="saliency"
        The captum attribution method. ``"saliency"`` is the vanilla input
        gradient used by Ko & Lim; ``"guided_backprop"`` and ``"deeplift"``
        need the model's non-linearities as ``torch.nn.ReLU`` modules.

    normalize : {"percentile", "max"} or None, default="percentile"
        ``"percentile"``: the absolute attribution summed over channels, minus
        its per-input minimum, divided by its 99th percentile minus minimum and
        clipped to [0, 1] (Ko & Lim's normalisation). ``"max"``: the absolute
        attribution summed over channels divided by its maximum. ``None``: the
        raw signed attribution with all channels.

    input_shape : tuple of int, default=None
        Shape of one input as the model expects it, e.g. ``(1, 28, 28)``, when
        ``X`` is passed flat as ``(n_samples, n_features)``. ``None``: inputs
        of ndim > 2 keep their own shape, flat inputs are passed to the model
        as they are. Images are channels-first ``(C, H, W)``.

    method_params : dict, default=None
        Extra keyword arguments for captum's ``attribute`` (e.g.
        ``{"n_steps": 50}`` for integrated gradients, ``{"nt_samples": 20,
        "stdevs": 0.1}`` for SmoothGrad, ``{"baselines": 0.5}``). Defaults
        that differ from captum's: integrated gradients ``n_steps=32``;
        SmoothGrad ``nt_samples=10, stdevs=0.15`` (an absolute noise level that
        suits inputs in [0, 1]).

    batch_size : int, default=256
        Inputs explained per forward/backward pass; bounds the memory used
        (integrated gradients and SmoothGrad pass their perturbed copies in
        chunks of about this many inputs too).

    device : str or torch.device, default=None
        Where to compute: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``
        (CUDA when available). ``None`` uses the device the model is on. A
        model on another device is copied there, never moved.

    memory : str or joblib.Memory, default=None
        Caches explanations, keyed on the model's weights and architecture,
        the method's settings and the inputs: explaining the same inputs again
        (each candidate of a ``GridSearchCV`` scoring the same test fold)
        costs a hash instead of a forward and backward pass.

    random_state : int, RandomState instance or None, default=None
        Seeds SmoothGrad's noise (the other methods are deterministic). Each
        input's noise is drawn from this seed and the input's own values, so
        its map does not depend on the other inputs of its batch.

    verbose : int, default=0
        Show a progress bar over batches when positive.

    Attributes
    ----------
    module_ : torch.nn.Module
        The module that computes the explanations (the model itself, or its
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
    ExplanationReconstructionDetector : Detects adversarial inputs from these maps.

    Notes
    -----
    For ``"saliency"``, ``"input_x_gradient"`` and ``"guided_backprop"`` the
    predicted class and its attribution come from a single forward and
    backward pass. The other methods need one extra forward pass to fix the
    target class before attributing. In an :class:`EnsembleDetector` (or a
    :class:`GuardedClassifier`), ``"saliency"`` and ``"input_x_gradient"``
    maps are read off the forward and backward pass that the other views of
    the same model share, with the same values as :meth:`transform`'s.

    References
    ----------
    .. [1] G. Ko and G. Lim, "Unsupervised Detection of Adversarial Examples
       with Model Explanations", AdvML workshop at KDD 2021, arXiv:2107.10480.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skadv import ExplanationTransformer
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    >>> X = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    >>> Xt = ExplanationTransformer(model).fit_transform(X)
    >>> Xt.shape, Xt.dtype
    ((5, 65), dtype('float32'))
    >>> bool(Xt[:, 1:].min() >= 0 and Xt[:, 1:].max() <= 1)
    True
    """

    _parameter_constraints = {
        **MODEL_PARAMETER_CONSTRAINTS,
        "method": [StrOptions(set(METHODS))],
        "normalize": [StrOptions({"percentile", "max"}), None],
        "method_params": [dict, None],
        "memory": [None, str, HasMethods(["cache"])],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        model,
        *,
        method="saliency",
        normalize="percentile",
        input_shape=None,
        method_params=None,
        batch_size=256,
        device=None,
        memory=None,
        random_state=None,
        verbose=0,
    ):
        self.model = model
        self.method = method
        self.normalize = normalize
        self.input_shape = input_shape
        self.method_params = method_params
        self.batch_size = batch_size
        self.device = device
        self.memory = memory
        self.random_state = random_state
        self.verbose = verbose

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
        self._fit_model(X)
        self._check_method_assumptions()
        rng = check_random_state(self.random_state)
        self._noise_seed = int(rng.randint(np.iinfo(np.int32).max))
        return self

    def _check_method_assumptions(self):
        """Warn when captum's rules for ``method`` do not cover the model.

        Guided backprop rewrites the backward pass of ``torch.nn.ReLU``
        modules only, DeepLift has rules for a fixed set of modules: other
        activations (GELU, SiLU, ReLUs called as functions...) fall back to
        plain gradients without a word from captum.
        """
        handled = _METHOD_ACTIVATIONS.get(self.method)
        if handled is None:
            return
        modules = list(self.module_.modules())
        unhandled = sorted(
            {
                type(m).__name__
                for m in modules
                if isinstance(m, _ACTIVATIONS) and not isinstance(m, handled)
            }
        )
        if unhandled:
            warnings.warn(
                f"method={self.method!r} has no rule for the model's "
                f"{', '.join(unhandled)} activations: captum passes plain gradients "
                "through them, so the maps are partly plain saliency. Use "
                "method='saliency' or 'integrated_gradients' for such models.",
                UserWarning,
                stacklevel=3,
            )
        elif not any(isinstance(m, handled) for m in modules):
            warnings.warn(
                f"method={self.method!r} rewrites the backward pass of "
                f"{' and '.join(h.__name__ for h in handled)} modules, and the model "
                "has none: activations called as functions (torch.relu, F.gelu, "
                "TransformerEncoderLayer(activation='gelu')) get plain gradients. "
                "Write the activations as torch.nn modules.",
                UserWarning,
                stacklevel=3,
            )

    @property
    def _channels_first(self):
        return len(self.input_shape_) == 3

    def _n_map_features(self):
        if self.normalize is not None and self._channels_first:
            return int(np.prod(self.input_shape_[1:]))
        return int(np.prod(self.input_shape_))

    def transform(self, X):
        """Explain each input for its predicted class.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Inputs in the model's own input range.

        Returns
        -------
        Xt : ndarray of shape (n_samples, 1 + n_map_features), dtype float32
            Column 0 holds the predicted class, the other columns the flattened
            attribution map (``H * W`` values for normalised image maps).
        """
        check_is_fitted(self)
        X, _ = self._validate_input(X, reset=False)
        memory = check_memory(self.memory)
        if not needs_key(memory):
            return self._explain(X)
        # Cached on what determines the maps: the model's weights and
        # architecture, the method's settings and X (not the transformer
        # object, whose pickle would hash the model by identity).
        key = (
            model_fingerprint(self.module_),
            self.method,
            self.normalize,
            self.input_shape_,
            repr(sorted((self.method_params or {}).items())),
            array_digest(X),
        )
        explain = memory.cache(_explain_cached, ignore=["transformer", "X"])
        return explain(self, key, X)

    def _explain(self, X):
        """Maps of validated 2-D inputs, batch by batch."""
        n_samples = X.shape[0]
        out = np.empty((n_samples, 1 + self._n_map_features()), dtype=np.float32)
        params = self._method_params()
        batches = self._batches(X)
        if self.verbose:
            from tqdm.auto import tqdm

            batches = tqdm(
                batches,
                total=-(-n_samples // self.batch_size),
                desc="explaining",
                unit="batch",
            )
        with eval_mode(self.module_), warnings.catch_warnings():
            # captum announces, on every call, the hooks it sets and removes.
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            for start, stop, batch in batches:
                batch.requires_grad_()
                predicted, attr = self._attribute(batch, params)
                out[start:stop] = self._rows(predicted, attr, start)
        return out

    def _rows(self, predicted, attr, start):
        """Output rows: the predicted class, then the normalised map."""
        finite = torch.isfinite(attr.flatten(1)).all(dim=1)
        if not finite.all():
            row = start + int(torch.nonzero(~finite)[0, 0])
            raise ValueError(
                f"The attributions of X[{row}] are not finite (they overflow "
                f"{attr.dtype}): X holds values far outside the model's "
                "input range."
            )
        maps = normalize_attributions(
            attr.detach(), self.normalize, self._channels_first
        )
        rows = np.empty((maps.shape[0], 1 + maps.shape[1]), dtype=np.float32)
        rows[:, 0] = predicted.cpu().numpy()
        rows[:, 1:] = maps.cpu().numpy()
        return rows

    def _pass_request(self):
        """The input gradient of a shared pass, for the gradient methods.

        Saliency and input x gradient are the input gradient of the predicted
        class's output (times the input): read off a :class:`ModelPass` that
        other views of the model share, instead of captum running the model
        again. Other methods, extra captum arguments and cached maps
        (``memory``) run on their own.
        """
        params = self._method_params()
        shareable = (self.method == "saliency" and set(params) <= {"abs"}) or (
            self.method == "input_x_gradient" and not params
        )
        if not shareable or needs_key(check_memory(self.memory)):
            return None
        return {"gradient": True}

    def _pass_rows(self, model_pass, start):
        return self._rows(
            model_pass.predicted, self._pass_attribution(model_pass), start
        )

    def _pass_attribution(self, model_pass):
        """The map of a :class:`ModelPass` with its input gradient (captum's)."""
        attr = model_pass.input_gradient
        if self.method == "input_x_gradient":
            return attr * model_pass.inputs
        if self._method_params().get("abs", False):
            return attr.abs()
        return attr

    def _method_params(self):
        return {
            **_DEFAULT_METHOD_PARAMS.get(self.method, {}),
            **(self.method_params or {}),
        }

    def torch_transform(self, X, *, module=None):
        """:meth:`transform` of a torch tensor, differentiable in ``X``.

        The maps of the single-pass methods (``"saliency"``,
        ``"input_x_gradient"``) as a torch computation with its graph kept, for
        attacks that differentiate a detector's score through the explanation
        (second-order gradients of the model). Normalisation is the same code
        as :meth:`transform`'s; the attribution is the input gradient of the
        predicted class's logit, which is what captum's ``Saliency`` computes.

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, C, H, W) or (n_samples, n_features)
            Inputs on ``device_``.

        module : torch.nn.Module, default=None
            The network to differentiate, e.g. a surrogate of ``module_`` with
            smooth stand-ins for its ReLUs; ``None`` uses ``module_``. Its
            forward values should be ``module_``'s for the maps to be the
            deployed ones.

        Returns
        -------
        Xt : torch.Tensor of shape (n_samples, 1 + n_map_features)
            Predicted class (not differentiable), then the normalised map.

        Examples
        --------
        >>> import numpy as np, torch
        >>> from skadv import ExplanationTransformer
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> X = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
        >>> transformer = ExplanationTransformer(model).fit(X)
        >>> Xt = transformer.torch_transform(torch.tensor(X, requires_grad=True))
        >>> bool(np.allclose(Xt.detach().numpy(), transformer.transform(X)))
        True
        """
        check_is_fitted(self)
        if self.method not in _SINGLE_PASS_METHODS - {"guided_backprop"}:
            raise ValueError(
                "torch_transform differentiates 'saliency' and 'input_x_gradient' "
                f"maps; this transformer uses method={self.method!r}."
            )
        module = self.module_ if module is None else module
        x = X.reshape(X.shape[0], *self.input_shape_)
        with eval_mode(module), differentiable_attention():
            model_pass = ModelPass(module, x, gradient=True, create_graph=True)
        attr = self._pass_attribution(model_pass)
        maps = normalize_attributions(attr, self.normalize, self._channels_first)
        predicted = model_pass.predicted
        return torch.cat([predicted[:, None].to(maps.dtype), maps], dim=1)

    def _attribute(self, batch, params):
        import captum.attr as ca

        method = self.method
        if method in _SINGLE_PASS_METHODS:
            scalar = _PredictedClassLogit(self.module_)
            if method == "saliency":
                attr = ca.Saliency(scalar).attribute(batch, **params)
            elif method == "input_x_gradient":
                attr = ca.InputXGradient(scalar).attribute(batch, **params)
            else:
                attr = ca.GuidedBackprop(scalar).attribute(batch, **params)
            return scalar.predicted, attr
        with torch.no_grad():
            predicted = self.module_(batch).argmax(dim=1)
        # Both methods run the model on many perturbed copies of the batch:
        # chunk them so that a pass holds about batch_size inputs.
        if method == "integrated_gradients":
            explainer = ca.IntegratedGradients(self.module_)
            params = {"internal_batch_size": self.batch_size, **params}
        elif method == "deeplift":
            explainer = ca.DeepLift(self.module_)
        else:
            return predicted, self._smoothgrad(batch, predicted, params)
        return predicted, explainer.attribute(batch, target=predicted, **params)

    def _smoothgrad(self, batch, predicted, params):
        """SmoothGrad: captum's Saliency averaged over noisy copies of each input.

        captum's NoiseTunnel draws the noise of a whole batch from torch's
        global generator, so an input's map would depend on the other inputs
        of its batch. Here each input's noise comes from a generator seeded by
        ``random_state`` and the input's own values: its map depends on
        nothing else.
        """
        import captum.attr as ca

        params = dict(params)
        n_samples = int(params.pop("nt_samples"))
        stdevs = float(params.pop("stdevs"))
        rows = batch.detach().cpu().numpy()
        noise = torch.empty((n_samples, *batch.shape), dtype=batch.dtype)
        for i, row in enumerate(rows):
            seed = (self._noise_seed + zlib.crc32(row.tobytes())) % 2**63
            generator = torch.Generator().manual_seed(seed)
            noise[:, i] = torch.randn(
                (n_samples, *row.shape), generator=generator, dtype=batch.dtype
            )
        noisy = (batch.detach()[None] + stdevs * noise.to(batch.device)).flatten(0, 1)
        targets = predicted.repeat(n_samples)
        saliency = ca.Saliency(self.module_)
        attr = torch.cat(
            [
                saliency.attribute(
                    noisy[s : s + self.batch_size].requires_grad_(),
                    target=targets[s : s + self.batch_size],
                    **params,
                )
                for s in range(0, len(noisy), self.batch_size)
            ]
        )
        return attr.reshape(n_samples, *batch.shape).mean(dim=0)

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only validated against the names seen in ``fit``.

        Returns
        -------
        feature_names_out : ndarray of str objects
            ``"predicted_class"``, then ``"explanation0"``, ``"explanation1"``...
        """
        check_is_fitted(self)
        _check_feature_names_in(self, input_features, generate_names=False)
        names = ["predicted_class"] + [
            f"explanation{i}" for i in range(self._n_map_features())
        ]
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
