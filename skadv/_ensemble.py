"""EnsembleDetector: several detectors' conformal p-values, combined."""

import numbers

import numpy as np
from sklearn.base import OutlierMixin, _fit_context, clone
from sklearn.ensemble._base import _fit_single_estimator
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils import Bunch, _safe_indexing, check_random_state, get_tags
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.metaestimators import _BaseComposition
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import _num_samples, check_is_fitted

from skadv._conformal import (
    COMBINE_METHODS,
    benign_rows,
    budget_scales,
    calibration_groups,
    conformal_combined_p_values,
    conformal_p_values,
    predicted_classes,
    resolve_min_class_rows,
    split_calibration,
    warn_small_classes,
)
from skadv._frozen_model import FrozenModelMixin, shared_transforms


class EnsembleDetector(OutlierMixin, _BaseComposition):
    """Several detectors' conformal p-values combined into one calibrated test.

    In scikit-learn's style of :class:`~sklearn.ensemble.VotingClassifier`:
    every member (a named detector taking the same inputs, e.g. a view +
    detector pipeline) is fitted in parallel on the same benign training
    rows; on the benign rows held out from all of them, each member's score
    becomes a conformal p-value (:func:`conformal_p_values`), a row's ``k``
    p-values are combined (``combine``), and the combination is calibrated
    again on the same held-out rows (:func:`conformal_combined_p_values`).
    Rows whose final p-value is below ``contamination`` are flagged. The
    members watch the same classifier and are far from independent; the
    second calibration keeps the promised false-positive rate anyway: at most
    ``contamination`` on new benign rows, on average over the calibration
    draw (the realised rate spreads as :func:`calibration_fpr_distribution`
    describes).

    Members that are pipelines starting with a view of the same model
    (:class:`ExplanationTransformer` with ``"saliency"`` or
    ``"input_x_gradient"``, :class:`RawInputTransformer`,
    :class:`ActivationTransformer`) share the model's passes when scoring: one
    forward pass per batch, with the hooks of every activation view, and one
    backward pass for every gradient map. Their scores are the ones each
    member computes on its own, bit for bit on the CPU. Other members, and
    other explanation methods, run the model on their own.

    Parameters
    ----------
    detectors : list of (str, estimator) tuples
        The members: each has ``fit`` and ``score_samples`` (higher = more
        benign) and takes the inputs passed to :meth:`fit`. Their own
        thresholds are not used. A member can be replaced, or set to
        ``"drop"``, with ``set_params(name=...)``, and its parameters set with
        ``set_params(name__param=...)``, as in ``GridSearchCV``.

    combine : {"fisher", "bonferroni", "min", "mean"}, default="fisher"
        How the members' p-values of a row are combined (see
        :func:`combine_p_values`). ``"fisher"`` suits attacks that several
        members see a little of; ``"min"`` suits attacks that one member sees
        clearly. Both, and ``"mean"``, are calibrated again; ``"bonferroni"``
        (``k * min p``, valid under any dependence) is not, so it flags
        fewer benign rows than ``contamination`` and loses power.

    weights : array-like of shape (n_detectors,), default=None
        The members' shares of the false-positive budget, one positive
        weight per entry of ``detectors`` (those of dropped members are
        ignored), as ``VotingClassifier``'s weights; not with
        ``combine="fisher"``. With ``"bonferroni"`` a row is flagged when
        some member's p-value is below its share ``w_j / sum(w)`` of
        ``contamination`` (the weighted Bonferroni test, valid under any
        dependence); see :func:`combine_p_values` for the others. None:
        equal shares.

    contamination : float in (0, 0.5], default=0.05
        Final p-value below which a row is flagged: the target false-positive
        rate.

    calibration_size : float in (0, 1) or int, default=0.2
        Benign rows held out from the members' training to calibrate: a
        share, or a number; at least ``min_calibration_rows(contamination)``.

    class_column : int, callable or None, default=None
        Source of each row's class for class-conditional p-values (see
        :class:`ConformalDetector`): a column of ``X`` or a callable returning
        the class of each row of ``X``.

    min_class_rows : int, default=None
        Classes with fewer calibration rows are calibrated on the rows of
        every class (pooled), with a warning. ``None``:
        ``min_calibration_rows(contamination)``.

    n_jobs : int, default=None
        Members fitted in parallel through joblib (any backend of
        ``joblib.parallel_config``). ``None`` means 1 unless in a
        ``joblib.parallel_config`` context; -1 means all processors.

    random_state : int, RandomState instance or None, default=None
        Seeds the split into training and calibration rows. The members'
        randomness is their own parameters'.

    Attributes
    ----------
    detectors_ : list of estimators
        The fitted members (without the dropped ones).

    named_detectors_ : sklearn.utils.Bunch
        The fitted members by name.

    calibration_scores_ : ndarray of shape (n_calibration, n_members)
        Each fitted member's ``score_samples`` of the held-out benign rows.

    calibration_classes_ : ndarray of shape (n_calibration,) or None
        Their classes, when ``class_column`` is set.

    min_class_rows_ : int
        The ``min_class_rows`` in use.

    weights_ : ndarray of shape (n_members,) or None
        The fitted members' weights, normalised to sum to 1; None without
        ``weights``.

    offset_ : float
        ``contamination``: ``decision_function = p_value - offset_``.

    n_features_in_ : int
        Number of features seen by the first member, when it records it.

    See Also
    --------
    ConformalDetector : One detector with a conformal threshold.
    combine_p_values : The combination rules.

    References
    ----------
    .. [1] V. Vovk and R. Wang, "Combining p-values via averaging",
       Biometrika, 2020.
    .. [2] S. Bates, E. Candes, L. Lei, Y. Romano and M. Sesia, "Testing for
       outliers with conformal p-values", Annals of Statistics, 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.covariance import EllipticEnvelope
    >>> from sklearn.ensemble import IsolationForest
    >>> from skadv import EnsembleDetector
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 2))
    >>> ensemble = EnsembleDetector(
    ...     [
    ...         ("forest", IsolationForest(random_state=0)),
    ...         ("gaussian", EllipticEnvelope(random_state=0)),
    ...     ],
    ...     random_state=0,
    ... )
    >>> ensemble.fit(X).predict([[0.0, 0.0], [6.0, 6.0]])
    array([ 1, -1])
    >>> ensemble.member_p_values([[6.0, 6.0]])
    array([[0.00990099, 0.00990099]])
    """

    _parameter_constraints = {
        "detectors": [list],
        "combine": [StrOptions(set(COMBINE_METHODS))],
        "weights": ["array-like", None],
        "contamination": [Interval(numbers.Real, 0, 0.5, closed="right")],
        "calibration_size": [
            Interval(numbers.Real, 0, 1, closed="neither"),
            Interval(numbers.Integral, 1, None, closed="left"),
        ],
        "class_column": [
            Interval(numbers.Integral, 0, None, closed="left"),
            callable,
            None,
        ],
        "min_class_rows": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "n_jobs": [numbers.Integral, None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        detectors,
        *,
        combine="fisher",
        weights=None,
        contamination=0.05,
        calibration_size=0.2,
        class_column=None,
        min_class_rows=None,
        n_jobs=None,
        random_state=None,
    ):
        self.detectors = detectors
        self.combine = combine
        self.weights = weights
        self.contamination = contamination
        self.calibration_size = calibration_size
        self.class_column = class_column
        self.min_class_rows = min_class_rows
        self.n_jobs = n_jobs
        self.random_state = random_state

    @property
    def named_detectors(self):
        """The members by name (unfitted), as a :class:`~sklearn.utils.Bunch`."""
        return Bunch(**dict(self.detectors))

    def get_params(self, deep=True):
        """Parameters of the ensemble and, with ``deep``, of its members.

        Parameters
        ----------
        deep : bool, default=True
            Also return each member (by name) and its parameters
            (``name__param``).

        Returns
        -------
        params : dict
            Parameter names mapped to their values.
        """
        return self._get_params("detectors", deep=deep)

    def set_params(self, **params):
        """Set parameters of the ensemble or of its members (``name__param``).

        Parameters
        ----------
        **params : dict
            Ensemble parameters, members by name (an estimator or ``"drop"``),
            or members' parameters as ``name__param``.

        Returns
        -------
        self : object
            The ensemble.
        """
        self._set_params("detectors", **params)
        return self

    def _validate_detectors(self):
        detectors = self.detectors
        if len(detectors) == 0 or not all(
            isinstance(item, (tuple, list))
            and len(item) == 2
            and isinstance(item[0], str)
            for item in detectors
        ):
            raise ValueError(
                "detectors must be a non-empty list of (name, detector) tuples; "
                f"got {detectors!r}."
            )
        names = [name for name, _ in detectors]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(
                f"detectors have duplicate names {duplicates}: each needs a name "
                "of its own (set_params addresses them as name__param)."
            )
        # scikit-learn's own rules: no '__' in names, no clash with parameters.
        self._validate_names(names)
        kept = [(name, d) for name, d in detectors if not _is_drop(d)]
        if not kept:
            raise ValueError("Every detector is 'drop': at least one is needed.")
        for name, detector in kept:
            if not (hasattr(detector, "fit") and hasattr(detector, "score_samples")):
                raise ValueError(
                    f"Detector {name!r} ({type(detector).__name__}) must have fit "
                    "and score_samples (higher = more benign)."
                )
        return kept

    def _validate_weights(self):
        """The kept members' weights, normalised; None without weights."""
        if self.weights is None:
            return None
        weights = np.asarray(self.weights, dtype=np.float64)
        if weights.shape != (len(self.detectors),):
            raise ValueError(
                f"weights must hold one weight per detector ({len(self.detectors)}, "
                f"dropped ones included); got shape {weights.shape}."
            )
        kept = np.array([not _is_drop(d) for _, d in self.detectors])
        weights = weights[kept]
        budget_scales(weights, len(weights))  # positive and finite
        if self.combine == "fisher":
            raise ValueError(
                "weights apply to combine='bonferroni', 'min' or 'mean'; got "
                "combine='fisher'."
            )
        return weights / weights.sum()

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit every member on benign rows and calibrate on held-out ones.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs, in whatever form the members take.

        y : array-like of shape (n_samples,), default=None
            Optional +1 benign / -1 adversarial labels: only benign rows are
            used, so fitting on a labelled mixed set (as in ``GridSearchCV``)
            is honest. ``None``: all benign.

        Returns
        -------
        self : object
            The fitted ensemble.
        """
        kept = self._validate_detectors()
        self.weights_ = self._validate_weights()
        X = benign_rows(X, y)
        classes = predicted_classes(self.class_column, X)
        self.min_class_rows_ = resolve_min_class_rows(
            self.min_class_rows, self.contamination
        )
        rng = check_random_state(self.random_state)
        train, calibration = split_calibration(
            _num_samples(X), self.calibration_size, self.contamination, classes, rng
        )
        X_train = _safe_indexing(X, train)
        self.detectors_ = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_single_estimator)(clone(detector), X_train, None, {})
            for _, detector in kept
        )
        self.named_detectors_ = Bunch(
            **{name: d for (name, _), d in zip(kept, self.detectors_, strict=True)}
        )
        self.calibration_scores_ = self._member_scores(_safe_indexing(X, calibration))
        self.calibration_classes_ = None if classes is None else classes[calibration]
        warn_small_classes(self.calibration_classes_, self.min_class_rows_)
        self.offset_ = self.contamination
        return self

    @property
    def n_features_in_(self):
        """Number of features seen by the first member."""
        check_is_fitted(self)
        return self.detectors_[0].n_features_in_

    def _view_outputs(self, X, readers=()):
        """The output of each member's view of a model, from shared passes.

        Members that are pipelines starting with a view of a model (an
        :class:`ExplanationTransformer`, :class:`RawInputTransformer`,
        :class:`ActivationTransformer`) get their view's output from
        :func:`shared_transforms`: the views of the same model share one
        forward (and backward) pass. A list aligned with ``detectors_``, None
        for the other members, and the outputs of ``readers`` (other readers
        of a model pass, e.g. a :class:`GuardedClassifier`'s logits), which
        join the same passes: ``(outputs, reader_outputs)``.
        """
        views = [member_view(d) for d in self.detectors_]
        shared = [i for i, view in enumerate(views) if view is not None]
        outputs = [None] * len(views)
        computed = shared_transforms([views[i] for i in shared] + list(readers), X)
        for i, output in zip(shared, computed[: len(shared)], strict=True):
            outputs[i] = output
        return outputs, computed[len(shared) :]

    def _member_scores(self, X, view_outputs=None):
        if view_outputs is None:
            view_outputs, _ = self._view_outputs(X)
        scores = np.column_stack(
            [
                np.asarray(
                    d.score_samples(X)
                    if Xt is None
                    else after_view(d, Xt, "score_samples"),
                    dtype=np.float64,
                )
                for d, Xt in zip(self.detectors_, view_outputs, strict=True)
            ]
        )
        if np.isnan(scores).any():
            names = [
                name
                for name, column in zip(self.named_detectors_, scores.T, strict=True)
                if np.isnan(column).any()
            ]
            raise ValueError(f"Detectors {names} returned NaN scores.")
        return scores

    def member_p_values(self, X):
        """Each member's conformal p-value of each row (small = adversarial).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs.

        Returns
        -------
        p_values : ndarray of shape (n_samples, n_members)
            Columns in the order of ``detectors_``.
        """
        check_is_fitted(self)
        scores = self._member_scores(X)
        p = np.empty_like(scores)
        for rows, reference in calibration_groups(self, X, len(scores)):
            for j in range(scores.shape[1]):
                p[rows, j] = conformal_p_values(
                    self.calibration_scores_[reference, j], scores[rows, j]
                )
        return p

    def p_value(self, X):
        """The calibrated combined p-value of each row: small means adversarial.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs.

        Returns
        -------
        p_values : ndarray of shape (n_samples,)
            In ``[1 / (n + 1), 1]`` with ``n`` calibration rows (except for
            ``combine="bonferroni"``, in ``[k / (n + 1), 1]``, or
            ``[1 / (w_j (n + 1)), 1]`` with weights).
        """
        check_is_fitted(self)
        return self._p_value(X, self._member_scores(X))

    def _p_value(self, X, scores):
        p = np.empty(len(scores), dtype=np.float64)
        for rows, reference in calibration_groups(self, X, len(scores)):
            p[rows] = conformal_combined_p_values(
                self.calibration_scores_[reference],
                scores[rows],
                self.combine,
                weights=self.weights_,
            )
        return p

    def _method_from_views(self, method, X, view_outputs):
        """``method(X)`` from the members' view outputs (:meth:`_view_outputs`),
        for a caller that read the predicted class off the same passes."""
        p = self._p_value(X, self._member_scores(X, view_outputs))
        if method in ("p_value", "score_samples"):
            return p
        if method == "decision_function":
            return p - self.offset_
        if method == "predict":
            return np.where(p - self.offset_ < 0, -1, 1)
        raise ValueError(f"Unknown method {method!r}.")

    def score_samples(self, X):
        """The combined p-value: higher for more benign rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            :meth:`p_value`.
        """
        return self.p_value(X)

    def decision_function(self, X):
        """``p_value - contamination``: negative means adversarial.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
            Negative for the rows flagged as adversarial.
        """
        return self.p_value(X) - self.offset_

    def torch_decision_function(self, X, *, module=None):
        """:meth:`decision_function` of a torch tensor, for attacks.

        The exact decision of ``combine="bonferroni"`` (``min(1, k * min_j
        p_j) - contamination``, or ``min(1, min_j p_j / w_j) - contamination``
        with weights) computed in torch from the members' own torch
        scores (pipelines of a view with ``torch_transform`` and a detector
        with ``torch_score_samples``). A conformal p-value counts calibration
        scores, a step function of the member's score: its gradient is taken
        through a smooth count (a sum of sigmoids of the distances to the
        calibration scores) while the forward value stays exact, so an
        attack steers by the member that flags the input most and is judged
        by the real decision.

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, ...)
            Inputs, as the members' views take them.

        module : torch.nn.Module, default=None
            A stand-in for the members' model (e.g. a surrogate with the same
            forward values) passed to each view's ``torch_transform``.

        Returns
        -------
        decision : torch.Tensor of shape (n_samples,), float64
            Negative for the rows flagged as adversarial.
        """
        check_is_fitted(self)
        if self.combine != "bonferroni" or self.calibration_classes_ is not None:
            raise ValueError(
                "torch_decision_function needs combine='bonferroni' and "
                f"class_column=None; this ensemble has combine={self.combine!r}, "
                f"class_column={self.class_column!r}."
            )
        import torch

        scores = torch.stack(
            [_torch_member_scores(d, X, module) for d in self.detectors_], dim=1
        )
        cal = torch.as_tensor(
            self.calibration_scores_, dtype=torch.float64, device=scores.device
        )
        n, k = cal.shape
        exact = (cal[None] <= scores[:, None, :]).sum(dim=1).to(torch.float64)
        spread = cal.std(dim=0).clamp_min(1e-12) / 10
        smooth = torch.sigmoid((scores[:, None, :] - cal[None]) / spread).sum(dim=1)
        counts = exact + (smooth - smooth.detach())
        p = (1 + counts) / (n + 1)
        if self.weights_ is None:
            combined = k * p.min(dim=1).values
        else:
            scales = torch.as_tensor(
                budget_scales(self.weights_, k), dtype=p.dtype, device=p.device
            )
            combined = (p * scales).min(dim=1).values
        return combined.clamp(max=1.0) - self.offset_

    def torch_decision_margin(self, X, *, module=None):
        """A continuous decision with the sign of :meth:`decision_function`.

        A conformal p-value is a step function of the member's score, and it
        stops moving below the smallest calibration score: an attack that only
        reads :meth:`decision_function` (a score-based search, which has no
        gradient to follow) sees no progress deep in the flagged region. This
        is each member's score minus the score at which its p-value crosses
        its share of ``contamination`` (the weighted Bonferroni rule of
        :meth:`torch_decision_function`), in units of the spread of its
        calibration scores, minimised over members. It is negative exactly
        for the rows :meth:`predict` flags, and computed from the members' own
        torch scores.

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, ...)
            Inputs, as the members' views take them.

        module : torch.nn.Module, default=None
            A stand-in for the members' model, as in
            :meth:`torch_decision_function`.

        Returns
        -------
        margin : torch.Tensor of shape (n_samples,), float64
            Negative for the rows flagged as adversarial.
        """
        check_is_fitted(self)
        if self.combine != "bonferroni" or self.calibration_classes_ is not None:
            raise ValueError(
                "torch_decision_margin needs combine='bonferroni' and "
                f"class_column=None; this ensemble has combine={self.combine!r}, "
                f"class_column={self.class_column!r}."
            )
        import torch

        scores = torch.stack(
            [_torch_member_scores(d, X, module) for d in self.detectors_], dim=1
        )
        n, k = self.calibration_scores_.shape
        scales = (
            np.full(k, float(k))
            if self.weights_ is None
            else budget_scales(self.weights_, k)
        )
        # Member j flags a row when its count of calibration scores <= the
        # row's is at most K_j, the largest count whose scaled p-value is
        # below contamination (the arithmetic of torch_decision_function);
        # that is when its score is below the (K_j + 1)-th smallest
        # calibration score.
        p = (1 + np.arange(n + 1, dtype=np.float64)) / (n + 1)
        thresholds = np.empty(k)
        for j in range(k):
            largest = int(np.sum(p * scales[j] < self.offset_)) - 1
            ordered = np.sort(self.calibration_scores_[:, j])
            thresholds[j] = (
                -np.inf if largest < 0 else np.inf if largest >= n else ordered[largest]
            )
        spread = np.maximum(self.calibration_scores_.std(axis=0), 1e-12)
        thresholds = torch.as_tensor(
            thresholds, dtype=scores.dtype, device=scores.device
        )
        spread = torch.as_tensor(spread, dtype=scores.dtype, device=scores.device)
        return ((scores - thresholds) / spread).min(dim=1).values

    def predict(self, X):
        """Predict +1 for benign and -1 for adversarial rows (``p < contamination``).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            +1 benign, -1 adversarial.
        """
        return np.where(self.decision_function(X) < 0, -1, 1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:
            members = [get_tags(d) for _, d in self.detectors if not _is_drop(d)]
        except (TypeError, ValueError):
            # Invalid detectors: fit reports them with a clear message.
            return tags
        tags.input_tags.allow_nan = all(t.input_tags.allow_nan for t in members)
        tags.input_tags.sparse = all(t.input_tags.sparse for t in members)
        return tags


def _torch_member_scores(member, X, module):
    """A member's ``score_samples`` of a tensor, through its torch path.

    A pipeline of a view and a detector, or a detector that runs the model on
    the inputs itself (:class:`FeatureSqueezingDetector`).
    """
    steps = getattr(member, "steps", None)
    if steps is None and hasattr(member, "torch_score_samples"):
        return member.torch_score_samples(X, module=module)
    if (
        steps is None
        or len(steps) != 2
        or not hasattr(steps[0][1], "torch_transform")
        or not hasattr(steps[1][1], "torch_score_samples")
    ):
        raise TypeError(
            "torch_decision_function needs members that are pipelines of a view "
            "with torch_transform and a detector with torch_score_samples, or "
            "detectors with torch_score_samples of the inputs; got "
            f"{type(member).__name__}."
        )
    view, final = steps[0][1], steps[1][1]
    return final.torch_score_samples(view.torch_transform(X, module=module))


def _is_drop(detector):
    return isinstance(detector, str) and detector == "drop"


def unfrozen(detector):
    """The estimator inside a FrozenEstimator, or ``detector`` itself."""
    return detector.estimator if isinstance(detector, FrozenEstimator) else detector


def member_view(detector):
    """The first step of a fitted pipeline when it is a view of a model, else None.

    A view here is an estimator that runs a frozen model on the raw inputs
    (:class:`FrozenModelMixin`) and is followed by the rest of the pipeline.
    """
    inner = unfrozen(detector)
    if not isinstance(inner, Pipeline) or len(inner.steps) < 2:
        return None
    view = inner.steps[0][1]
    if not (
        isinstance(view, FrozenModelMixin)
        and hasattr(view, "transform")
        and hasattr(view, "module_")
    ):
        return None
    return view


def after_view(detector, Xt, method):
    """``method`` of a pipeline whose first step's output ``Xt`` is given.

    What ``Pipeline`` does after its first step: the other transformers'
    ``transform``, then the final step's ``method``.
    """
    steps = unfrozen(detector).steps[1:]
    for _, step in steps[:-1]:
        if step is not None and step != "passthrough":
            Xt = step.transform(Xt)
    return getattr(steps[-1][1], method)(Xt)
