"""FeatureSqueezingDetector: how much squeezing an input moves the model's softmax."""

import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from skadv._frozen_model import MODEL_PARAMETER_CONSTRAINTS, FrozenModelMixin
from skadv._torch_utils import (
    eval_mode,
    module_device_dtype,
    reduce_bit_depth_straight_through,
)
from skadv._validation import check_detection_labels


def reduce_bit_depth(X, bit_depth):
    """Round values in [0, 1] to ``2 ** bit_depth`` evenly spaced levels."""
    levels = 2**bit_depth - 1
    return np.rint(X * levels) / levels


def _symmetric_indices(n, before, after):
    """Indices of a length-``n`` axis padded by mirroring, edge included.

    scipy's ``mode="reflect"`` (numpy's ``"symmetric"``): ``d c b a | a b c
    d``; torch's own ``"reflect"`` padding leaves the edge value out.
    """
    return torch.as_tensor(np.pad(np.arange(n), (before, after), mode="symmetric"))


def _upper_median_2x2(padded):
    """Upper middle value of each 2x2 window of padded images ``(..., H, W)``.

    The upper middle of four values ``a, b, c, d`` is the larger of
    ``min(max(a, b), max(c, d))`` and ``max(min(a, b), min(c, d))``: four
    elementwise comparisons of shifted copies instead of a sort of every
    window (five times faster; the preset's squeezer).
    """
    a, b = padded[..., :-1, :-1], padded[..., :-1, 1:]
    c, d = padded[..., 1:, :-1], padded[..., 1:, 1:]
    return torch.maximum(
        torch.minimum(torch.maximum(a, b), torch.maximum(c, d)),
        torch.maximum(torch.minimum(a, b), torch.minimum(c, d)),
    )


def torch_median_smooth(x, size, input_shape):
    """Median filter of ``size`` over each input's spatial axes, differentiable.

    ``x`` has shape ``(n, *input_shape)``. Images ``(C, H, W)`` are filtered
    over ``H`` and ``W``, one channel at a time; inputs of other shapes over
    all their axes. The window and the edges are those of Xu et al.'s code
    (scipy's ``median_filter``, origin 0, ``mode="reflect"``: for an even size
    the window reaches one pixel further to the top left than to the bottom
    right), and the median of an even count is the upper middle value, as
    scipy's rank filter takes it. The gradient flows to the value each median
    selects. Written out because torch has no median filter.
    """
    dims = range(x.ndim - 2, x.ndim) if len(input_shape) == 3 else range(1, x.ndim)
    before, after = size // 2, size - size // 2 - 1
    for d in dims:
        index = _symmetric_indices(x.shape[d], before, after).to(x.device)
        x = x.index_select(d, index)
    if size == 2 and len(input_shape) == 3:
        return _upper_median_2x2(x)
    for d in dims:
        x = x.unfold(d, size, 1)
    windows = x.flatten(x.ndim - len(dims))
    return windows.sort(dim=-1).values[..., windows.shape[-1] // 2]


class FeatureSqueezingDetector(FrozenModelMixin, OutlierMixin, BaseEstimator):
    """Flag inputs whose prediction changes when the input is squeezed.

    Xu, Evans & Qi's feature squeezing [1]_: the model is run on each input
    and on squeezed copies of it (fewer bits per value, a median filter). A
    benign input's softmax barely moves; an adversarial perturbation, tuned to
    the exact input values, is largely squeezed out, so the softmax jumps
    back towards the original class. The score of an input is the largest L1
    distance between its softmax and a squeezed copy's. Unlike the view-based
    detectors, it reads raw inputs and needs the model.

    Scores follow scikit-learn's outlier detectors: :meth:`predict` returns +1
    for benign and -1 for adversarial inputs, :meth:`score_samples` is higher
    for more benign inputs and :meth:`decision_function` is negative for the
    inputs flagged as adversarial. :meth:`squeezing_distance` is the plain
    "higher means more adversarial" score.

    Parameters
    ----------
    model : torch.nn.Module or skorch.NeuralNetClassifier
        A trained classifier whose forward pass returns logits; the softmax of
        the logits is compared. A fitted skorch net is unwrapped to its
        ``module_``; when its criterion is ``NLLLoss`` (skorch's default), the
        module returns probabilities, which are compared as they are (the
        softmax of their log). A bare torch module returning probabilities
        would have them softmaxed a second time, which flattens the
        differences: pass a module that returns logits. The model is run in
        eval mode and never trained; its own parameters are not exposed
        through ``get_params``.

    bit_depth : int in [1, 16] or None, default=1
        Bits per value of the bit-depth squeezer, for inputs in [0, 1]: each
        value is rounded to one of ``2 ** bit_depth`` evenly spaced levels
        (1 bit suits MNIST-like digits; Xu et al. use 4 or 5 for colour
        images). ``None`` disables it.

    median_size : int >= 2 or None, default=2
        Size of the median-filter squeezer's window: ``median_size`` x
        ``median_size`` over the height and width of ``(C, H, W)`` images,
        one channel at a time (scipy's ``median_filter``, reflected edges).
        Inputs of other shapes are filtered over all their axes. ``None``
        disables it.

    contamination : float in (0, 0.5], default=0.05
        Target false-positive rate on benign inputs: ``offset_`` is the
        ``contamination`` quantile of the benign scores ``fit`` sees. Fit on
        benign inputs the model was *not* trained on: the model is more
        confident on its own training inputs, their squeezed copies move its
        softmax less, and a threshold from them flags more new benign inputs
        than ``contamination`` (on MNIST, 6.3% of the test images at 0.05 with
        the threshold from the 60,000 training images the CNN learned from).
        Fitting learns nothing else, so a few thousand held-out rows suffice.

    input_shape : tuple of int, default=None
        Shape of one input as the model expects it, e.g. ``(1, 28, 28)``, when
        ``X`` is passed flat as ``(n_samples, n_features)``. ``None``: inputs
        of ndim > 2 keep their own shape, flat inputs are passed to the model
        as they are. The median filter works on this shape.

    batch_size : int, default=256
        Inputs per forward pass (each with its squeezed copies); bounds the
        memory used.

    device : str or torch.device, default=None
        Where to run the model: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``
        (CUDA when available). ``None`` uses the device the model is on. A
        model on another device is copied there, never moved.

    Attributes
    ----------
    offset_ : float
        Threshold on :meth:`score_samples`: ``decision_function =
        score_samples - offset_``.

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
    ExplanationReconstructionDetector : Detection from a view of the input.
    ClassConditionalGaussianDetector : Mahalanobis distances on activations.

    Notes
    -----
    Each batch runs the model once on the inputs and their squeezed copies
    together, squeezed in torch on ``device``: the same code, with gradients,
    is :meth:`torch_decision_function`, which the adaptive attacks of
    :mod:`skadv.attacks` differentiate.

    References
    ----------
    .. [1] W. Xu, D. Evans and Y. Qi, "Feature Squeezing: Detecting
       Adversarial Examples in Deep Neural Networks", NDSS 2018,
       arXiv:1704.01155.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skadv import FeatureSqueezingDetector
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    >>> X = np.random.default_rng(0).random((100, 1, 8, 8), dtype=np.float32)
    >>> detector = FeatureSqueezingDetector(model, contamination=0.1).fit(X)
    >>> detector.decision_function(X).shape
    (100,)
    >>> float(np.mean(detector.predict(X) == -1))
    0.1
    """

    _parameter_constraints = {
        **MODEL_PARAMETER_CONSTRAINTS,
        "bit_depth": [Interval(numbers.Integral, 1, 16, closed="both"), None],
        "median_size": [Interval(numbers.Integral, 2, None, closed="left"), None],
        "contamination": [Interval(numbers.Real, 0, 0.5, closed="right")],
    }

    def __init__(
        self,
        model,
        *,
        bit_depth=1,
        median_size=2,
        contamination=0.05,
        input_shape=None,
        batch_size=256,
        device=None,
    ):
        self.model = model
        self.bit_depth = bit_depth
        self.median_size = median_size
        self.contamination = contamination
        self.input_shape = input_shape
        self.batch_size = batch_size
        self.device = device

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Set the threshold from the scores of benign inputs; the model is not trained.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Inputs in the model's own input range ([0, 1] for ``bit_depth``).

        y : array-like of shape (n_samples,), default=None
            Optional labels, +1 benign and -1 adversarial: only benign rows set
            the threshold. ``None``: all rows are benign.

        Returns
        -------
        self : object
            The fitted detector.
        """
        if self.bit_depth is None and self.median_size is None:
            raise ValueError(
                "bit_depth and median_size are both None: FeatureSqueezingDetector "
                "needs at least one squeezer; set bit_depth (e.g. 1) or "
                "median_size (e.g. 2)."
            )
        X = self._fit_model(X)
        if y is not None:
            X = X[check_detection_labels(y, X.shape[0])]
        if X.shape[0] == 0:
            raise ValueError("y marks no row as benign (+1): nothing to learn from.")
        self._fitted_with = (self.bit_depth, self.median_size)
        distances = self._distances(X)
        self.offset_ = float(np.percentile(-distances, 100 * self.contamination))
        return self

    def _check_range(self, X):
        if self.bit_depth is None or X.size == 0:
            return
        low, high = float(X.min()), float(X.max())
        if low < 0 or high > 1:
            raise ValueError(
                f"bit_depth={self.bit_depth} squeezes inputs in [0, 1], but X holds "
                f"values in [{low:.4g}, {high:.4g}]. Scale X to [0, 1] or set "
                "bit_depth=None."
            )

    def _squeezed(self, x):
        """Squeezed copies of a batch of model-shaped inputs, in one tensor."""
        copies = []
        if self.bit_depth is not None:
            copies.append(reduce_bit_depth_straight_through(x, self.bit_depth))
        if self.median_size is not None:
            copies.append(torch_median_smooth(x, self.median_size, self.input_shape_))
        return torch.cat(copies)

    def _torch_distances(self, x, module):
        """Largest L1 distance between the softmax on each input and on its copies.

        The one implementation of the score: :meth:`squeezing_distance` runs it
        without gradients, batch by batch; :meth:`torch_score_samples` with
        them, for attacks.
        """
        n = x.shape[0]
        logits = self._as_logits(module(torch.cat([x, self._squeezed(x)]))).double()
        proba = torch.softmax(logits, dim=1).reshape(-1, n, logits.shape[1])
        return (proba[1:] - proba[0]).abs().sum(dim=2).amax(dim=0)

    def _distances(self, X):
        """Squeezing distances of validated flat inputs, batch by batch."""
        self._check_range(X)
        _, dtype = module_device_dtype(self.module_)
        out = np.empty(X.shape[0], dtype=np.float64)
        with torch.no_grad(), eval_mode(self.module_):
            for start in range(0, X.shape[0], self.batch_size):
                stop = min(start + self.batch_size, X.shape[0])
                chunk = X[start:stop].reshape(stop - start, *self.input_shape_)
                # A copy: X may be a read-only memory map (joblib workers).
                batch = torch.tensor(chunk, dtype=dtype, device=self.device_)
                distance = self._torch_distances(batch, self.module_)
                if not torch.isfinite(distance).all():
                    row = start + int(torch.nonzero(~torch.isfinite(distance))[0, 0])
                    raise ValueError(
                        f"The model's output on X[{row}] or its squeezed copies is "
                        "not finite: X holds values far outside the model's input "
                        "range."
                    )
                out[start:stop] = distance.cpu().numpy()
        return out

    def _check_fitted_with(self):
        check_is_fitted(self)
        if (self.bit_depth, self.median_size) != self._fitted_with:
            bit_depth, median_size = self._fitted_with
            raise ValueError(
                "bit_depth or median_size changed since fit (fitted with "
                f"bit_depth={bit_depth!r}, median_size={median_size!r}); the "
                "threshold belongs to the fitted values: refit the detector."
            )

    def torch_score_samples(self, X, *, module=None):
        """:meth:`score_samples` in torch, differentiable with respect to ``X``.

        The same computation as :meth:`score_samples` (the model is put in
        eval mode; the bit-depth squeezer's rounding passes gradients straight
        through, the median filter to the values it selects), for attacks that
        must know the detector (:mod:`skadv.attacks`).

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, C, H, W) or (n_samples, n_features)
            Model-shaped inputs on ``device_``.

        module : torch.nn.Module, default=None
            Stands in for the model (e.g. a surrogate of it); None: ``module_``.

        Returns
        -------
        scores : torch.Tensor of shape (n_samples,), float64
            Higher for more benign inputs.
        """
        self._check_fitted_with()
        module = self.module_ if module is None else module
        with eval_mode(module):
            return -self._torch_distances(X, module)

    def torch_decision_function(self, X, *, module=None):
        """:meth:`decision_function` in torch, differentiable with respect to ``X``.

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, C, H, W) or (n_samples, n_features)
            Model-shaped inputs on ``device_``.

        module : torch.nn.Module, default=None
            Stands in for the model; None: ``module_``.

        Returns
        -------
        decision : torch.Tensor of shape (n_samples,), float64
            ``torch_score_samples(X) - offset_``: negative means adversarial.

        Examples
        --------
        >>> import numpy as np, torch
        >>> from skadv import FeatureSqueezingDetector
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> X = np.random.default_rng(0).random((50, 1, 8, 8), dtype=np.float32)
        >>> detector = FeatureSqueezingDetector(model).fit(X)
        >>> x = torch.as_tensor(X[:3], device=detector.device_).requires_grad_()
        >>> decision = detector.torch_decision_function(x)
        >>> np.allclose(decision.detach().numpy(), detector.decision_function(X[:3]))
        True
        >>> decision.sum().backward()
        >>> x.grad.shape
        torch.Size([3, 1, 8, 8])
        """
        return self.torch_score_samples(X, module=module) - self.offset_

    def squeezing_distance(self, X):
        """Largest L1 distance between the softmax on each input and on a squeezed copy.

        Higher means more adversarial; between 0 and 2.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Inputs in the model's own input range.

        Returns
        -------
        distances : ndarray of shape (n_samples,)
            The detection score of Xu et al.
        """
        self._check_fitted_with()
        X, _ = self._validate_input(X, reset=False)
        return self._distances(X)

    def score_samples(self, X):
        """Benign-ness of each input: the negated squeezing distance.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Inputs in the model's own input range.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Higher for more benign inputs.
        """
        return -self.squeezing_distance(X)

    def decision_function(self, X):
        """Score shifted by the threshold: negative means adversarial.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Inputs in the model's own input range.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
            ``score_samples(X) - offset_``.
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """Predict +1 for benign and -1 for adversarial inputs.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Inputs in the model's own input range.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            +1 benign, -1 adversarial.
        """
        return np.where(self.decision_function(X) < 0, -1, 1)
