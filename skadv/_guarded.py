"""GuardedClassifier: a torch classifier that rejects what a detector flags."""

import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from skadv._ensemble import EnsembleDetector, after_view, member_view, unfrozen
from skadv._explain import ExplanationTransformer
from skadv._frozen_model import (
    MODEL_PARAMETER_CONSTRAINTS,
    FrozenModelMixin,
    shared_transforms,
)
from skadv._torch_utils import eval_mode, unwrap_model
from skadv._views import BaseView

# Transformers whose output column 0 is the model's predicted class (arg-max
# of its logits), computed in the same forward pass as the view itself.
_CLASS_WRITING_VIEWS = (ExplanationTransformer, BaseView)


class _LogitsReader:
    """A guard's logits as a reader of shared model passes.

    :func:`shared_transforms` groups it with the detector's views of the same
    model (same module, device, input shape and batch size), so
    :meth:`GuardedClassifier.predict_with_scores` reads the probabilities off
    the forward pass that computes the views; on its own, ``transform`` runs
    the model once.
    """

    def __init__(self, guard):
        self.guard = guard
        self.module_ = guard.module_
        self.device_ = guard.device_
        self.input_shape_ = guard.input_shape_
        self.batch_size = guard.batch_size

    def _validate_input(self, X, reset=False):
        return self.guard._validate_input(X, reset=reset)

    def _batches(self, X):
        return self.guard._batches(X)

    def _pass_request(self):
        return {}

    def _pass_rows(self, model_pass, start):
        logits = self.guard._as_logits(model_pass.outputs)
        return logits.detach().float().cpu().numpy()

    def transform(self, X):
        return self.guard._logits(X)


def _is_fitted(detector):
    try:
        check_is_fitted(detector)
    except NotFittedError:
        return False
    return True


def _final_has(detector, method):
    """Whether ``detector``, or the last step of a pipeline, has ``method``."""
    if hasattr(detector, method):
        return True
    inner = unfrozen(detector)
    if isinstance(inner, Pipeline):
        return hasattr(inner.steps[-1][1], method)
    return False


def _detector_has(method):
    def check(self):
        return _final_has(getattr(self, "detector_", self.detector), method)

    return check


class GuardedClassifier(FrozenModelMixin, ClassifierMixin, BaseEstimator):
    """A trained torch classifier that rejects the inputs a detector flags.

    The deployment object: :meth:`predict` returns the model's predicted class,
    or ``reject_label`` for the inputs the detector flags as adversarial
    (``detector.predict(X) == -1``); :meth:`predict_proba` gives the model's
    softmax, :meth:`detector_score` the detector's p-value (or its decision
    function when it has no p-value), and :meth:`predict_with_scores` all
    three in one call. Calling the guard on a torch tensor, ``guard(x)``,
    returns the labels as a tensor.

    The model is never trained. ``fit`` fits a clone of ``detector`` on the
    benign inputs ``X`` when it is not fitted yet; an already fitted detector
    is used as it is (kept in ``detector_``, not copied). Cloning the guard (as
    ``GridSearchCV`` does) clones the detector too, which is then refitted:
    wrap a fitted detector in :class:`~sklearn.frozen.FrozenEstimator` to keep
    it through clones.

    When the detector is a pipeline whose first step is a view of the same
    model (:class:`ExplanationTransformer`, :class:`RawInputTransformer`,
    :class:`ActivationTransformer`), or an :class:`EnsembleDetector` with such
    a member, the predicted class is read from the view's column 0:
    prediction and detection share one forward (and, for explanations,
    backward) pass of the model, which an ensemble's views of the model share
    too. Other detectors cost one more forward pass for the prediction.

    Parameters
    ----------
    model : torch.nn.Module or skorch.NeuralNetClassifier
        The trained classifier, returning logits (a fitted skorch net is
        unwrapped to its ``module_``; with skorch's ``NLLLoss`` the module
        returns probabilities, which :meth:`predict_proba` returns as they
        are, up to a 1e-7 renormalisation). Run in eval mode, in batches, its
        modes restored afterwards; its own parameters are not exposed through
        ``get_params``.

    detector : estimator
        A detector of raw inputs following the +1 benign / -1 adversarial
        convention, fitted or not: a pipeline of a view and a detector
        (``make_pipeline(ExplanationTransformer(model),
        ExplanationReconstructionDetector())``), a :class:`ConformalDetector`,
        an :class:`EnsembleDetector`, a preset from :func:`make_detector`.

    reject_label : int, float or str, default=-1
        The label :meth:`predict` returns for flagged inputs. It must not be
        one of ``classes_``, and must be a number when the classes are
        numbers, a string when they are strings.

    classes : array-like of shape (n_classes,), default=None
        The label of each of the model's outputs, in output order (e.g. class
        names). ``None``: ``0, 1, ..., n_classes - 1``.

    input_shape : tuple of int, default=None
        Shape of one input as the model expects it, e.g. ``(1, 28, 28)``,
        when ``X`` is passed flat. ``None``: inputs of ndim > 2 keep their own
        shape; flat inputs take the shape the detector's view was fitted with,
        if it has one, else are passed to the model flat.

    batch_size : int, default=256
        Inputs per forward pass of the model; bounds the memory used.

    device : str or torch.device, default=None
        Where to run the model for :meth:`predict_proba` (and for predictions
        not read from a view): ``"cpu"``, ``"cuda"``, ``"auto"``... ``None``:
        the device the model is on. The detector runs where it was set to.

    Attributes
    ----------
    detector_ : estimator
        The fitted detector: ``detector`` itself when it was fitted, else its
        fitted clone.

    classes_ : ndarray of shape (n_classes,)
        The label of each of the model's outputs.

    shares_forward_pass_ : bool
        Whether :meth:`predict` reads the predicted class from the detector's
        view, or from an ensemble member's view (no forward pass of its own).

    module_ : torch.nn.Module
        The module run by :meth:`predict_proba` (the model, or its copy on
        ``device``).

    device_ : torch.device
        The device it runs on.

    input_shape_ : tuple of int
        Shape of one input as passed to the model.

    n_features_in_ : int
        Number of features of one (flattened) input.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    ExplanationTransformer : The explanation view of the model.
    ConformalDetector : A detector with a p-value and a guaranteed FPR.
    EnsembleDetector : Several detectors' p-values combined.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from sklearn.pipeline import make_pipeline
    >>> from skadv import (
    ...     ExplanationReconstructionDetector, ExplanationTransformer,
    ...     GuardedClassifier, make_reconstructor,
    ... )
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> X = np.random.default_rng(0).random((60, 1, 4, 4), dtype=np.float32)
    >>> detector = make_pipeline(
    ...     ExplanationTransformer(model),
    ...     ExplanationReconstructionDetector(
    ...         reconstructor=make_reconstructor(max_epochs=2), class_column=None,
    ...         random_state=0,
    ...     ),
    ... )
    >>> guard = GuardedClassifier(model, detector, reject_label=-1).fit(X)
    >>> guard.classes_
    array([0, 1, 2])
    >>> labels, proba, scores = guard.predict_with_scores(X[:4])
    >>> labels.shape, proba.shape, scores.shape
    ((4,), (4, 3), (4,))
    >>> bool(np.all((labels == -1) == (scores < 0)))  # decision_function < 0
    True
    >>> guard(torch.from_numpy(X[:4])).dtype  # torch in, torch out
    torch.int64
    """

    _parameter_constraints = {
        **MODEL_PARAMETER_CONSTRAINTS,
        "detector": [HasMethods(["fit", "predict"])],
        "reject_label": [numbers.Real, str],
        "classes": ["array-like", None],
    }

    def __init__(
        self,
        model,
        detector,
        *,
        reject_label=-1,
        classes=None,
        input_shape=None,
        batch_size=256,
        device=None,
    ):
        self.model = model
        self.detector = detector
        self.reject_label = reject_label
        self.classes = classes
        self.input_shape = input_shape
        self.batch_size = batch_size
        self.device = device

    # ------------------------------------------------------------------ fit

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit the detector on benign inputs unless it is fitted; never the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Benign inputs in the model's own input range.

        y : None
            Ignored: the model's classes are its own outputs (``classes``).

        Returns
        -------
        self : object
            The fitted guard.
        """
        if _is_fitted(self.detector):
            self.detector_ = self.detector
        else:
            self.detector_ = clone(self.detector).fit(X)
        self._view = self._find_view()
        X = self._fit_model(X)
        n_outputs = self._n_outputs(X[:1])
        self.classes_ = self._check_classes(n_outputs)
        self._check_reject_label()
        self.shares_forward_pass_ = self._view is not None
        return self

    def _find_view(self):
        """The view of this model whose column 0 gives the predicted class.

        The first step of a pipeline detector, or of the first member of an
        :class:`EnsembleDetector` that is such a pipeline; None when the
        detector has no view of this model.
        """
        inner = unfrozen(self.detector_)
        if isinstance(inner, EnsembleDetector):
            views = [member_view(d) for d in getattr(inner, "detectors_", ())]
        else:
            views = [member_view(inner)]
        for view in views:
            if not isinstance(view, _CLASS_WRITING_VIEWS):
                continue
            try:
                same_model = unwrap_model(view.model) is unwrap_model(self.model)
            except (TypeError, NotFittedError):
                continue
            if same_model:
                return view
        return None

    def _check_input_shape(self, X, sample_shape):
        view_shape = getattr(self._view, "input_shape_", None)
        if self.input_shape is None and sample_shape is None and view_shape:
            if int(np.prod(view_shape)) == X.shape[1]:
                return tuple(view_shape)
        return super()._check_input_shape(X, sample_shape)

    def _check_model_output(self, X_one):
        # Before the model's own check, whose message would blame the model.
        n_detector = getattr(self.detector_, "n_features_in_", None)
        if n_detector is not None and n_detector != self.n_features_in_:
            raise ValueError(
                f"The fitted detector takes inputs of {n_detector} features but X "
                f"has {self.n_features_in_}: fit the detector on the model's inputs."
            )
        super()._check_model_output(X_one)

    def _n_outputs(self, X_one):
        _, _, batch = next(self._batches(X_one))
        with torch.no_grad(), eval_mode(self.module_):
            return int(self.module_(batch).shape[1])

    def _check_classes(self, n_outputs):
        if self.classes is None:
            return np.arange(n_outputs)
        classes = np.asarray(self.classes)
        if classes.ndim != 1 or len(classes) != n_outputs:
            raise ValueError(
                f"classes must hold one label per model output: the model has "
                f"{n_outputs} outputs, classes has shape {classes.shape}."
            )
        if len(np.unique(classes)) != len(classes):
            raise ValueError(f"classes must be distinct; got {list(classes)}.")
        return classes

    def _check_reject_label(self):
        reject, classes = self.reject_label, self.classes_
        text_classes = classes.dtype.kind in "USO"
        if isinstance(reject, str) != text_classes:
            kinds = ("a string", "strings") if text_classes else ("a number", "numbers")
            raise ValueError(
                f"reject_label must be {kinds[0]} as the classes are {kinds[1]}; "
                f"got reject_label={reject!r}."
            )
        if reject in set(classes.tolist()):
            raise ValueError(
                f"reject_label={reject!r} is one of the model's classes "
                f"{classes.tolist()}: choose a label that no class has, such as "
                "-1 or 'rejected'."
            )

    def __sklearn_is_fitted__(self):
        return hasattr(self, "classes_")

    # ---------------------------------------------------------- prediction

    def _detector_method(self, X, shared, method):
        """``method`` of the fitted detector on ``X``; from the view outputs of
        :meth:`_view_output` when the class was read from a shared pass."""
        detector = self.detector_
        if shared is not None:
            Xt, member_outputs = shared
            if member_outputs is not None:
                ensemble = unfrozen(detector)
                return ensemble._method_from_views(method, X, member_outputs)
            return np.asarray(after_view(detector, Xt, method))
        if hasattr(detector, method):
            return np.asarray(getattr(detector, method)(X))
        Xt, steps = X, unfrozen(detector).steps
        for _, step in steps[:-1]:
            if step is not None and step != "passthrough":
                Xt = step.transform(Xt)
        return np.asarray(getattr(steps[-1][1], method)(Xt))

    def _view_output(self, X, logits=False):
        """``(shared, logits)``: the detector's view outputs and the logits.

        ``shared`` is ``(Xt, member_outputs)`` of the shared pass, or None when
        the model runs on its own: ``Xt`` is the output of the view that gives
        the class; for an ensemble, ``member_outputs`` holds every member
        view's output, all of them from the same passes of the model (see
        :meth:`EnsembleDetector._view_outputs`), else it is None. ``logits``
        (only when asked for, else None) are read off the same passes, or
        computed by a pass of their own when there is no view.
        """
        if self._view is None:
            return None, (self._logits(X) if logits else None)
        readers = [_LogitsReader(self)] if logits else []
        inner = unfrozen(self.detector_)
        if isinstance(inner, EnsembleDetector):
            outputs, read = inner._view_outputs(X, readers=readers)
            index = [member_view(d) for d in inner.detectors_].index(self._view)
            shared = (outputs[index], outputs)
        else:
            Xt, *read = shared_transforms([self._view, *readers], X)
            shared = (Xt, None)
        return shared, (read[0] if logits else None)

    def _score_method(self):
        if _final_has(self.detector_, "p_value"):
            return "p_value"
        return "decision_function"

    def _model_classes(self, X, shared, logits=None):
        """Indices of the model's predicted classes (from ``logits`` when
        there is no shared pass and they were computed already)."""
        if shared is not None:
            return shared[0][:, 0].astype(np.intp)
        return (self._logits(X) if logits is None else logits).argmax(axis=1)

    def _logits(self, X):
        X, _ = self._validate_input(X, reset=False)
        out = np.empty((X.shape[0], len(self.classes_)), dtype=np.float32)
        with torch.no_grad(), eval_mode(self.module_):
            for start, stop, batch in self._batches(X):
                logits = self._as_logits(self.module_(batch))
                out[start:stop] = logits.float().cpu().numpy()
        return out

    def _labels(self, indices, flagged):
        dtype = np.asarray([*self.classes_.tolist(), self.reject_label]).dtype
        labels = self.classes_[indices].astype(dtype)
        labels[flagged] = self.reject_label
        return labels

    def _predict(self, X, logits=False):
        """Class indices, flags, the shared pass and (with ``logits``) the
        logits, all from one pass of the model when the detector has a view."""
        check_is_fitted(self)
        shared, out = self._view_output(X, logits=logits)
        flagged = self._detector_method(X, shared, "predict") == -1
        return self._model_classes(X, shared, out), flagged, shared, out

    def predict(self, X):
        """The model's predicted class, or ``reject_label`` where flagged.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Inputs.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            A label of ``classes_`` for each input the detector passes,
            ``reject_label`` for each one it flags.
        """
        indices, flagged, _, _ = self._predict(X)
        return self._labels(indices, flagged)

    def predict_proba(self, X):
        """The model's class probabilities (softmax of its logits).

        Unaffected by the detector: a flagged input keeps the probabilities
        the model gives it.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Inputs.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes), dtype float32
            Columns in the order of ``classes_``.
        """
        check_is_fitted(self)
        return torch.softmax(torch.from_numpy(self._logits(X)), dim=1).numpy()

    def predict_log_proba(self, X):
        """The log of :meth:`predict_proba` (log-softmax of the logits).

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Inputs.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes), dtype float32
            Columns in the order of ``classes_``.
        """
        check_is_fitted(self)
        return torch.log_softmax(torch.from_numpy(self._logits(X)), dim=1).numpy()

    def detector_score(self, X):
        """The detector's p-value when it has one, else its decision function.

        Small p-values, and negative decisions, mean adversarial. Named apart
        from ``decision_function``, which for a scikit-learn classifier means
        per-class confidence.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Inputs.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            ``detector_.p_value(X)`` (in [0, 1], flagged below the
            detector's ``contamination``) or ``detector_.decision_function(X)``
            (flagged below 0).
        """
        check_is_fitted(self)
        return self._detector_method(X, None, self._score_method())

    @available_if(_detector_has("p_value"))
    def p_value(self, X):
        """The detector's p-value of each input: small means adversarial.

        Only for detectors with ``p_value`` (:class:`ConformalDetector`,
        :class:`EnsembleDetector`, or a pipeline ending in one).

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Inputs.

        Returns
        -------
        p_values : ndarray of shape (n_samples,)
            ``detector_.p_value(X)``.
        """
        check_is_fitted(self)
        return self._detector_method(X, None, "p_value")

    def predict_with_scores(self, X):
        """Labels, probabilities and the detector's score in one call.

        When the detector has a view of the model (see
        ``shares_forward_pass_``), all three come from one forward (and,
        for explanations, backward) pass of each batch: the probabilities
        are read off the pass that computes the view, not a pass of their own.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Inputs.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            :meth:`predict`.

        proba : ndarray of shape (n_samples, n_classes)
            :meth:`predict_proba`.

        scores : ndarray of shape (n_samples,)
            :meth:`detector_score`.
        """
        indices, flagged, shared, logits = self._predict(X, logits=True)
        scores = self._detector_method(X, shared, self._score_method())
        proba = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        return self._labels(indices, flagged), proba, scores

    def __call__(self, x):
        """Labels of a batch of inputs as a torch tensor, rejects included.

        For serving code written in torch: ``guard(x)`` is
        ``torch.as_tensor(guard.predict(x))`` on ``x``'s device. The labels
        must be numbers (``classes`` and ``reject_label``).

        Parameters
        ----------
        x : torch.Tensor or array-like of shape (n_samples, ...)
            A batch of inputs (detached and copied to the CPU for the
            detector).

        Returns
        -------
        labels : torch.Tensor of shape (n_samples,)
            On ``x``'s device (the CPU for arrays).
        """
        check_is_fitted(self)
        if self.classes_.dtype.kind not in "iub":
            raise TypeError(
                f"guard(x) returns a tensor of labels, which needs integer classes; "
                f"these are {self.classes_.dtype} (use predict)."
            )
        device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        return torch.as_tensor(self.predict(x), device=device)
