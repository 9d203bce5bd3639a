"""ExplanationReconstructionDetector: per-class autoencoders on explanation maps."""

import contextlib
import inspect
import math
import numbers
import threading

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context, clone
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, check_memory, validate_data

from skadv._autoencoder import make_reconstructor
from skadv._conformal import conformal_threshold
from skadv._scoring import (
    METRICS,
    reconstruct_routed,
    reconstruction_scores,
    route_to_tensor,
)
from skadv._torch_utils import (
    array_digest,
    eval_mode,
    needs_key,
    resolve_device,
    torch_seed,
    torch_threads,
)
from skadv._validation import check_detection_labels, split_class_column

# Rows reconstructed per forward pass when scoring: large enough to amortise
# the call, small enough to bound memory (at most 4096 rows and 2**22 map
# values, 16 MB of float32: 27 maps of 3x224x224; the error's temporaries,
# the median's sort among them, take about ten times as much).
_SCORING_CHUNK = 4096
_SCORING_CHUNK_VALUES = 2**22


def _is_conditional(net):
    """Whether a reconstructor net wraps one class-conditional autoencoder."""
    return bool(getattr(net.module, "class_conditional", False))


def _stratify_or_none(classes):
    """Stratify a split on the classes unless one has too few rows for it."""
    if classes is None:
        return None
    _, counts = np.unique(classes, return_counts=True)
    return classes if counts.min() >= 2 else None


# Weight initialisation draws from torch's global generator: seeding it must
# not interleave between threads (joblib's threading backend, dask workers).
_INIT_LOCK = threading.Lock()


def _make_reconstructor(template, n_features, seed, device, verbose, n_classes=None):
    """An initialised clone of ``template`` for maps of ``n_features`` values.

    ``n_classes``: the classes a class-conditional module tells apart.
    """
    net = clone(template)
    module = net.module
    for name, value in (("n_features", n_features), ("n_classes", n_classes)):
        if (
            value is not None
            and isinstance(module, type)
            and name in inspect.signature(module).parameters
            and f"module__{name}" not in net.get_params()
        ):
            net.set_params(**{f"module__{name}": value})
    if device is not None:
        net.set_params(device=device)
    if verbose >= 2:
        net.set_params(verbose=1)
    if seed is not None:
        # Shuffling gets a generator of its own: training then never touches
        # the global generator, so concurrent jobs cannot disturb each other.
        net.set_params(iterator_train__generator=torch.Generator().manual_seed(seed))
    with _INIT_LOCK, torch_seed(seed):
        net.initialize()
    return net


def _train(net, X):
    if not X.flags.writeable:
        # joblib hands large arrays to workers as read-only memory maps, which
        # torch wraps with a warning: train on a private copy.
        X = X.copy()
    with torch_threads(1):
        net.partial_fit(X, X)
    return net


class _ClassMaps(torch.utils.data.Dataset):
    """Rows ``rows`` of ``maps``, each with its class input ``classes``.

    A class-conditional autoencoder trains on pairs (map, class) whose maps
    repeat (the shared slot sees every row again): indexing instead of
    stacking copies keeps the maps in memory once. skorch passes the dict's
    keys to the module's ``forward`` and takes the map as the target.
    """

    def __init__(self, maps, rows, classes):
        self.maps, self.rows, self.classes = maps, rows, classes

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.maps[self.rows[i]]
        return {"maps": row, "classes": self.classes[i]}, row


def _conditional_rows(route, shared):
    """Training pairs of a conditional autoencoder: (row, class input) arrays.

    Each row under its own slot ``route``, and every row again under the
    shared slot when there is one: the shared slot then learns all benign
    rows, as the per-class detector's fallback autoencoder does.
    """
    rows = np.flatnonzero(route != shared)
    slots = route[rows]
    if shared is not None:
        rows = np.concatenate([rows, np.arange(len(route))])
        slots = np.concatenate([slots, np.full(len(route), shared)])
    return rows, slots.astype(np.int64)


def _train_conditional(net, maps, route, shared):
    if not maps.flags.writeable:
        maps = maps.copy()
    rows, slots = _conditional_rows(route, shared)
    # One network for every class: torch's intra-op threads are worth it here.
    net.partial_fit(_ClassMaps(maps, rows, slots))
    return net


def _fit_conditional(
    template, maps, route, n_slots, shared, seed, device, verbose, maps_digest=None
):
    """Fit one class-conditional clone of ``template`` on every class's maps.

    ``route``: each row's slot (its class, or ``shared`` for a class too small
    for a slot of its own). Module-level for ``joblib.Memory``, as
    :func:`_fit_reconstructor`; ``maps_digest`` stands for ``maps`` in the key.
    """
    net = _make_reconstructor(
        template, maps.shape[1], seed, device, verbose, n_classes=n_slots
    )
    return _train_conditional(net, maps, route, shared)


def _fit_reconstructor(template, X, seed, device, verbose, X_digest=None):
    """Fit a clone of ``template`` to reconstruct ``X``.

    Module-level so that joblib can send it to workers and
    ``joblib.Memory`` can cache it: the threshold (``contamination``) and
    ``verbose`` are not part of the cache key, so changing them alone never
    retrains. ``X_digest`` (:func:`array_digest` of ``X``) stands for ``X`` in
    the key.
    """
    return _train(_make_reconstructor(template, X.shape[1], seed, device, verbose), X)


def _thresholds(errors, scales, contamination, shared=None):
    """Each autoencoder's offset from its benign calibration errors.

    The ``contamination`` quantile of a class's own rows, when it has enough
    of them for a quantile: at least ``2 / contamination`` (two rows expected
    above the threshold). A class with fewer rows shares the tail of all
    classes: its errors are divided by its scale, the ratios of every class
    (not the shared autoencoder's, whose rows are everyone's) are pooled, and
    the class's threshold is the conformal threshold of the pooled ratios
    (:func:`~skadv._conformal.conformal_threshold`) times its scale.

    ``scales`` are each autoencoder's median error on the rows it was trained
    on. With held-out calibration rows the training median is the right
    divisor: a new benign row's error over it is exchangeable with a held-out
    row's, whereas dividing held-out rows by their own median pins every
    class's ratios at 1 in the middle and narrows the pooled tail (on the 8x8
    digits, about 25 held-out rows per class, that flagged 8.5% of the benign
    test digits at a 5% target).
    Returns the offsets and which of them are pooled.
    """
    needed = math.ceil(2 / contamination - 1e-9)
    q = 100 * contamination
    offsets = np.array([np.percentile(-e, q) for e in errors])
    pooled = np.array([len(e) < needed for e in errors])
    scales = np.asarray(scales, dtype=np.float64)
    pool = [
        e / m
        for i, (e, m) in enumerate(zip(errors, scales, strict=True))
        if i != shared and m > 0
    ]
    if not pooled.any() or not pool or sum(len(r) for r in pool) < needed:
        return offsets, np.zeros(len(errors), dtype=bool)
    threshold = conformal_threshold(-np.concatenate(pool), contamination)
    offsets[pooled] = threshold * scales[pooled]
    return offsets, pooled


class ExplanationReconstructionDetector(OutlierMixin, BaseEstimator):
    """Flag inputs whose explanation map its class's autoencoder cannot rebuild.

    Ko & Lim's unsupervised detector: one autoencoder per predicted class is
    trained on explanation maps of benign inputs only. An adversarial input
    changes its explanation far more than the input itself, so its map is
    reconstructed badly by the autoencoder of the class it is (mis)classified
    as. Input rows are what :class:`ExplanationTransformer` writes: the
    predicted class in ``class_column``, then the flattened map.

    Scores follow scikit-learn's outlier detectors: :meth:`predict` returns +1
    for benign and -1 for adversarial inputs, :meth:`score_samples` is higher
    for more benign inputs and :meth:`decision_function` is negative for the
    inputs flagged as adversarial. :meth:`reconstruction_error` is the plain
    "higher means more adversarial" score.

    Parameters
    ----------
    reconstructor : skorch.NeuralNetRegressor, default=None
        Template of the autoencoder net (a skorch net), cloned and fitted once
        per class. Its module maps flat maps to flat reconstructions; when the
        module class takes an ``n_features`` argument that the net does not
        set, it is set to the width of the maps. ``None``:
        ``make_reconstructor()``, Ko & Lim's 64-unit MLP (Adam, lr 1e-3, MSE,
        10 epochs, batch 32) with a sigmoid output, which suits maps in [0, 1]
        (not the signed maps of ``normalize=None``). To tune nested parameters
        such as ``reconstructor__module__hidden``, pass
        ``make_reconstructor()`` explicitly.

        A net around a class-conditional module
        (:func:`make_conditional_reconstructor`; a module class with
        ``class_conditional = True`` whose ``forward`` takes the maps and each
        row's class index) is instead fitted once, on the benign maps of every
        class with the class as an input: memory no longer grows by a network
        per class, so thousands of classes fit. Each class keeps its own
        threshold; its module's ``n_classes`` is set to the number of classes
        with an autoencoder of their own plus one slot for the shared
        fallback, which then learns every benign row as well (as the fallback
        autoencoder does). See :ref:`many_classes`.

    contamination : float in (0, 0.5], default=0.05
        Target false-positive rate on benign rows: each class's threshold
        ``offset_`` is the ``contamination`` quantile of its benign scores (on
        the rows held out by ``validation_fraction``, else on the training
        rows). A quantile needs rows: a class with fewer than ``2 /
        contamination`` of them (40 at 0.05) shares the tail of all classes
        instead: each class's errors divided by its autoencoder's median error
        on its training rows are pooled, and its threshold is that median
        times the pooled ratios' split-conformal threshold (expected
        false-positive rate at most ``contamination`` on benign rows like the
        held-out ones; ``pooled_threshold_`` says which). Changing it alone
        need not retrain anything (see ``memory``).

    class_column : int or None, default=0
        Column of ``X`` holding the predicted class (integer values), which
        routes each row to its class's autoencoder. ``None``: no class column,
        one autoencoder for all rows.

    metric : {"top_half_l1", "mse"}, default="top_half_l1"
        Reconstruction error: Ko & Lim's mean of the absolute errors above each
        row's median, or the mean squared error.

    contrast : float >= 0, default=0.0
        Weight of a class-contrastive term in the score. An adversarial input
        is classified as class ``c`` but its map still looks like its original
        class's: badly rebuilt by the autoencoder of ``c``, comparatively well
        by another's. With ``e_k`` the error under class ``k``'s autoencoder,
        a row routed to ``c`` scores ``e_c * (e_c / min_{k != c} e_k) **
        contrast``, so ``log(score) = log(e_c) + contrast * (log(e_c) -
        min_{k != c} log(e_k))``. ``0`` is Ko & Lim's plain error. Scoring
        then runs every class's autoencoder on every row (cheap next to the
        classifier's backward pass with ten classes; with a class-conditional
        reconstructor, one pass of its network per class, so a thousand
        classes make scoring a thousand times dearer); it needs
        ``class_column``. On MNIST,
        0.5 lifts the mean per-class ROC AUC against FGSM at eps 0.05 from
        0.93 to 0.95 with the paper's autoencoders (see ``make_detector``).

    validation_fraction : float in (0, 0.5] or None, default=None
        Share of the benign rows (stratified by class) held out from the
        autoencoders to set the thresholds. Autoencoders large enough to fit
        their own training maps closely score them lower than new benign
        maps, so thresholds from in-sample scores flag more than
        ``contamination`` of new benign inputs. ``None``: train on every row
        and set the thresholds on the training scores. Not used by
        :meth:`partial_fit`.

    min_class_size : int, default=10
        Classes with fewer benign training rows get no autoencoder of their
        own: they share a fallback autoencoder trained on all benign rows (and
        the fallback's threshold), which is trained only when needed.

    unseen_class : {"error", "fallback"}, default="error"
        What to do at predict time with a class that had no benign training
        row: ``"error"`` raises a ValueError naming the classes, ``"fallback"``
        routes them to the fallback autoencoder (trained at fit time for this).

    memory : str or joblib.Memory, default=None
        Caches the fitted autoencoders: refitting on the same data with only
        ``contamination`` (or ``verbose``) changed, as in ``GridSearchCV``,
        reuses them. The seeds are part of the cache key: with
        ``random_state=None`` every fit draws new seeds and never hits.

    n_jobs : int, default=None
        Number of autoencoders trained in parallel through joblib (unused by a
        class-conditional reconstructor: one network, trained on torch's own
        threads). Each one
        trains on a single torch thread: they are too small to gain from
        more, parallelism across classes scales better, and results then do
        not depend on ``n_jobs``. Any joblib backend works
        (``joblib.parallel_config(backend="dask")`` on a cluster); with thread
        backends, a module that draws random numbers while training (dropout)
        is not reproducible. ``None`` means 1 unless in a
        ``joblib.parallel_config`` context; -1 means all processors.

    device : str or torch.device, default=None
        Device for the autoencoders (``"cpu"``, ``"cuda"``, ``"auto"``).
        ``None`` keeps the reconstructor's own setting.

    random_state : int, RandomState instance or None, default=None
        Seeds each autoencoder's initialisation and shuffling (one seed per
        class, drawn in class order, so results do not depend on ``n_jobs``)
        and the rows held out by ``validation_fraction``. Torch's global
        generator is left untouched.

    verbose : int, default=0
        Progress bar over the autoencoders when positive; skorch's per-epoch
        log as well when 2 or more.

    Attributes
    ----------
    class_labels_ : ndarray of shape (n_classes,)
        Classes with an autoencoder of their own (empty when ``class_column``
        is None).

    fallback_classes_ : ndarray of shape (n_small_classes,)
        Classes seen at fit time with fewer than ``min_class_size`` benign rows;
        they are scored by the shared fallback autoencoder.

    reconstructors_ : list of skorch.NeuralNetRegressor
        Fitted autoencoders, aligned with ``class_labels_``; the shared one
        (the only one when ``class_column`` is None, else the fallback), if
        trained, comes last. A class-conditional reconstructor: one net,
        whose class input takes the same indices (the classes, then the
        shared slot).

    fallback_index_ : int or None
        Index of the shared autoencoder (the shared slot of a conditional
        one) among the autoencoders, None when none was trained.

    n_samples_seen_ : ndarray of shape (n_autoencoders,)
        Benign rows each autoencoder (or slot of the conditional one) was
        trained on (summed over ``partial_fit`` calls).

    offset_ : ndarray of shape (n_autoencoders,)
        Threshold of each autoencoder (or slot) on :meth:`score_samples`,
        aligned with ``class_labels_`` then the shared one:
        ``decision_function = score_samples - offset_``.

    pooled_threshold_ : ndarray of shape (n_autoencoders,), bool
        Whether each threshold was set from the pooled rows of all classes
        (its class had too few calibration rows; see ``contamination``).

    n_features_in_ : int
        Number of columns of ``X`` seen during fit.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    ExplanationTransformer : Computes the maps this detector reads.
    make_conditional_reconstructor : One autoencoder for many classes.
    DetectorClassifier : Wraps a detector as a binary classifier for
        scikit-learn's threshold tuners.

    References
    ----------
    .. [1] G. Ko and G. Lim, "Unsupervised Detection of Adversarial Examples
       with Model Explanations", AdvML workshop at KDD 2021, arXiv:2107.10480.

    Examples
    --------
    >>> import numpy as np
    >>> from skadv import ExplanationReconstructionDetector
    >>> rng = np.random.default_rng(0)
    >>> maps = rng.random((200, 16), dtype=np.float32) * 0.2  # benign: faint maps
    >>> X = np.column_stack([rng.integers(0, 2, 200), maps]).astype(np.float32)
    >>> detector = ExplanationReconstructionDetector(random_state=0).fit(X)
    >>> odd = np.column_stack([[0, 1], rng.random((2, 16))]).astype(np.float32)
    >>> detector.predict(odd)
    array([-1, -1])
    """

    _parameter_constraints = {
        "reconstructor": [HasMethods(["initialize", "partial_fit", "predict"]), None],
        "contamination": [Interval(numbers.Real, 0, 0.5, closed="right")],
        "class_column": [Interval(numbers.Integral, 0, None, closed="left"), None],
        "metric": [StrOptions(set(METRICS))],
        "contrast": [Interval(numbers.Real, 0, None, closed="left")],
        "validation_fraction": [Interval(numbers.Real, 0, 0.5, closed="right"), None],
        "min_class_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "unseen_class": [StrOptions({"error", "fallback"})],
        "memory": [None, str, HasMethods(["cache"])],
        "n_jobs": [numbers.Integral, None],
        "device": [str, torch.device, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        reconstructor=None,
        contamination=0.05,
        class_column=0,
        metric="top_half_l1",
        contrast=0.0,
        validation_fraction=None,
        min_class_size=10,
        unseen_class="error",
        memory=None,
        n_jobs=None,
        device=None,
        random_state=None,
        verbose=0,
    ):
        self.reconstructor = reconstructor
        self.contamination = contamination
        self.class_column = class_column
        self.metric = metric
        self.contrast = contrast
        self.validation_fraction = validation_fraction
        self.min_class_size = min_class_size
        self.unseen_class = unseen_class
        self.memory = memory
        self.n_jobs = n_jobs
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _validate(self, X, *, reset):
        # float64 values beyond float32's range become inf in the cast, which
        # validate_data then names; numpy's own cast warning adds nothing.
        with np.errstate(over="ignore", invalid="ignore"):
            return validate_data(self, X, dtype=np.float32, reset=reset)

    def _split(self, X):
        """Split validated rows into (class labels or None, flat maps)."""
        if self.class_column is None:
            # torch warns on read-only arrays (every pandas>=3 DataFrame's).
            return None, X if X.flags.writeable else X.copy()
        return split_class_column(
            X, self.class_column, part="map value", single="use a single autoencoder"
        )

    def _benign_rows(self, X, y, *, reset):
        """The steps ``fit`` and ``partial_fit`` share: validated benign rows.

        Returns the rows, their classes (None without a class column) and maps.
        """
        X = self._validate(X, reset=reset)
        if y is not None:
            X = X[check_detection_labels(y, X.shape[0])]
        if X.shape[0] == 0:
            raise ValueError("y marks no row as benign (+1): nothing to learn from.")
        classes, maps = self._split(X)
        if classes is None and self.contrast > 0:
            raise ValueError(
                f"contrast={self.contrast!r} compares the classes' autoencoders and "
                "needs a class column; got class_column=None. Use contrast=0."
            )
        return X, classes, maps

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Train one autoencoder per class on the benign rows and set thresholds.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows of ``ExplanationTransformer`` output: class column, then map.

        y : array-like of shape (n_samples,), default=None
            Optional labels, +1 benign and -1 adversarial: only benign rows are
            used, so fitting on a labelled mixed set (e.g. in GridSearchCV) is
            honest. ``None``: all rows are benign.

        Returns
        -------
        self : object
            The fitted detector.
        """
        X, classes, maps = self._benign_rows(X, y, reset=True)
        template = (
            make_reconstructor() if self.reconstructor is None else self.reconstructor
        )
        device = resolve_device(self.device)
        rng = check_random_state(self.random_state)

        if classes is None:
            labels = np.empty(0, dtype=np.int64)
        else:
            labels = np.unique(classes)
        # One seed per seen class (in class order) and one for the shared net,
        # drawn whatever the routing, so seeds do not depend on n_jobs.
        seeds = rng.randint(np.iinfo(np.int32).max, size=labels.size + 1)
        held_out = None
        if self.validation_fraction is not None:
            if X.shape[0] < 2:
                raise ValueError(
                    f"validation_fraction={self.validation_fraction!r} holds benign "
                    "rows out of training and needs at least 2 of them; got "
                    f"n_samples = {X.shape[0]}."
                )
            keep, held = train_test_split(
                np.arange(X.shape[0]),
                test_size=self.validation_fraction,
                stratify=_stratify_or_none(classes),
                random_state=rng,
            )
            held_out = (None if classes is None else classes[held], maps[held])
            maps = maps[keep]
            classes = None if classes is None else classes[keep]
        counts = np.array([np.sum(classes == c) for c in labels], dtype=np.int64)
        own = counts >= self.min_class_size
        self.class_labels_ = labels[own]
        self.fallback_classes_ = labels[~own]
        needs_shared = (
            classes is None
            or self.fallback_classes_.size > 0
            or self.unseen_class == "fallback"
        )
        n_own = self.class_labels_.size
        self.fallback_index_ = n_own if needs_shared else None
        # Each training row's autoencoder: its class's, else the shared one.
        route = self._fit_route(classes, maps.shape[0])
        memory = check_memory(self.memory)
        keyed = needs_key(memory)
        if _is_conditional(template):
            fit_one = memory.cache(_fit_conditional, ignore=["verbose", "maps"])
            seed = int(seeds[-1])
            self.reconstructors_ = [
                fit_one(
                    template,
                    maps,
                    route,
                    n_own + needs_shared,
                    self.fallback_index_,
                    seed,
                    device,
                    self.verbose,
                    keyed and array_digest(maps),
                )
            ]
            self.n_samples_seen_ = np.bincount(route, minlength=n_own + needs_shared)
            if needs_shared:
                self.n_samples_seen_[-1] = maps.shape[0]
        else:
            tasks = [
                (maps[classes == c], int(s))
                for c, s in zip(labels[own], seeds[:-1][own], strict=True)
            ]
            if needs_shared:
                tasks.append((maps, int(seeds[-1])))
            fit_one = memory.cache(_fit_reconstructor, ignore=["verbose", "X"])
            jobs = (
                delayed(fit_one)(
                    template, Xc, seed, device, self.verbose, keyed and array_digest(Xc)
                )
                for Xc, seed in tasks
            )
            results = Parallel(n_jobs=self.n_jobs, return_as="generator")(jobs)
            if self.verbose:
                from tqdm.auto import tqdm

                results = tqdm(results, total=len(tasks), desc="autoencoders")
            self.reconstructors_ = list(results)
            self.n_samples_seen_ = np.array([len(Xc) for Xc, _ in tasks])
        self._fitted_with = (self.metric, self.class_column, self.contrast)

        # Thresholds from each autoencoder's benign rows: the held-out ones of
        # its class (its training rows when none was held out); the shared
        # autoencoder is calibrated on every row.
        errors = self._slot_errors(maps, route)
        scales = [np.median(e) if len(e) else 0.0 for e in errors]
        if held_out is not None:
            held_classes, held_maps = held_out
            held_route = self._fit_route(held_classes, held_maps.shape[0])
            if (held_route < 0).any():  # classes absent from training
                held_maps, held_route = (
                    held_maps[held_route >= 0],
                    held_route[held_route >= 0],
                )
            for i, rows in enumerate(self._slot_errors(held_maps, held_route)):
                if len(rows):
                    errors[i] = rows
        self.offset_, self.pooled_threshold_ = _thresholds(
            errors, scales, self.contamination, shared=self.fallback_index_
        )
        return self

    def _fit_route(self, classes, n_rows):
        """Each row's autoencoder at fit time; -1 for a class it has none for."""
        if classes is None:
            return np.zeros(n_rows, dtype=np.intp)
        labels = self.class_labels_
        index = np.searchsorted(labels, classes).clip(max=max(labels.size - 1, 0))
        has_own = labels.size > 0 and labels[index] == classes
        shared = -1 if self.fallback_index_ is None else self.fallback_index_
        return np.where(has_own, index, shared).astype(np.intp)

    def _slot_errors(self, maps, route):
        """Errors of each autoencoder's calibration rows, one array per autoencoder.

        A class's autoencoder scores the rows routed to it; the shared one (if
        any) every row. One pass over the rows (two with a shared autoencoder),
        whatever the number of classes.
        """
        n_slots = len(self.n_samples_seen_)
        scores = self._score(maps, route)
        errors = [scores[route == i] for i in range(n_slots)]
        if self.fallback_index_ is not None and len(maps):
            errors[self.fallback_index_] = self._score(
                maps, np.full(len(maps), self.fallback_index_)
            )
        return errors

    @_fit_context(prefer_skip_nested_validation=False)
    def partial_fit(self, X, y=None, classes=None):
        """Train the autoencoders on one more batch of rows, for data streams.

        Each call trains every autoencoder whose class has benign rows in the
        batch for the reconstructor's ``max_epochs`` passes over them (with
        skorch's ``partial_fit``), so explanations can be fed chunk by chunk
        from data larger than memory. Every class listed in ``classes`` gets an
        autoencoder of its own (``min_class_size`` does not apply: counts are
        not known up front), and the shared fallback is trained on every row
        when ``unseen_class="fallback"``. The thresholds of the autoencoders
        trained on a batch are re-estimated from that batch's scores by fit's
        rule (classes with fewer than ``2 / contamination`` rows in the batch
        share the pooled tail of all classes in it): end the stream with a
        batch of benign rows large enough to calibrate them.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A batch of ``ExplanationTransformer`` output.

        y : array-like of shape (n_samples,), default=None
            Optional +1 benign / -1 adversarial labels; only benign rows train.

        classes : array-like, default=None
            Every class label that ``class_column`` will hold; required on the
            first call unless ``class_column`` is None, ignored afterwards.

        Returns
        -------
        self : object
            The updated detector.
        """
        first = not hasattr(self, "reconstructors_")
        if not first:
            self._check_fitted_with()
        X, batch_classes, maps = self._benign_rows(X, y, reset=first)
        if first:
            self._start_stream(maps.shape[1], classes)
        route = (
            np.zeros(X.shape[0], dtype=np.intp)
            if batch_classes is None
            else self._route(batch_classes)
        )
        n_slots = len(self.n_samples_seen_)
        counts = np.bincount(route, minlength=n_slots)
        if self.fallback_index_ is not None:
            counts[self.fallback_index_] = len(maps)
        if self._conditional():
            _train_conditional(
                self.reconstructors_[0], maps, route, self.fallback_index_
            )
        else:
            for i in np.flatnonzero(counts):
                rows = maps if i == self.fallback_index_ else maps[route == i]
                _train(self.reconstructors_[i], rows)
        self.n_samples_seen_ += counts
        # The same rule as fit's, on the batch's rows (the autoencoders were
        # just trained on them, so their median is the training median):
        # classes with too few rows in the batch share the pooled tail.
        errors = self._slot_errors(maps, route)
        slots = [i for i, e in enumerate(errors) if len(e)]
        offsets, pooled = _thresholds(
            [errors[i] for i in slots],
            [np.median(errors[i]) for i in slots],
            self.contamination,
            shared=(
                slots.index(self.fallback_index_)
                if self.fallback_index_ in slots
                else None
            ),
        )
        self.offset_[slots] = offsets
        self.pooled_threshold_[slots] = pooled
        return self

    def _start_stream(self, n_features, classes):
        if self.class_column is None:
            labels = np.empty(0, dtype=np.int64)
        elif classes is None:
            raise ValueError(
                "classes must be passed to the first call to partial_fit: every "
                "class label that class_column will hold."
            )
        else:
            labels = np.unique(np.asarray(classes)).astype(np.int64)
        template = (
            make_reconstructor() if self.reconstructor is None else self.reconstructor
        )
        device = resolve_device(self.device)
        seeds = check_random_state(self.random_state).randint(
            np.iinfo(np.int32).max, size=labels.size + 1
        )
        self.class_labels_ = labels
        self.fallback_classes_ = np.empty(0, dtype=np.int64)
        shared = self.class_column is None or self.unseen_class == "fallback"
        self.fallback_index_ = labels.size if shared else None
        n_slots = labels.size + shared
        if _is_conditional(template):
            self.reconstructors_ = [
                _make_reconstructor(
                    template,
                    n_features,
                    int(seeds[-1]),
                    device,
                    self.verbose,
                    n_classes=n_slots,
                )
            ]
        else:
            keep = list(seeds[:-1]) + ([seeds[-1]] if shared else [])
            self.reconstructors_ = [
                _make_reconstructor(
                    template, n_features, int(seed), device, self.verbose
                )
                for seed in keep
            ]
        self.n_samples_seen_ = np.zeros(n_slots, dtype=np.int64)
        self.offset_ = np.full(n_slots, np.nan)
        self.pooled_threshold_ = np.zeros(n_slots, dtype=bool)
        self._fitted_with = (self.metric, self.class_column, self.contrast)

    def _conditional(self):
        """Whether one class-conditional autoencoder serves every class."""
        return _is_conditional(self.reconstructors_[0])

    def _modules(self):
        """The autoencoders as the scoring core takes them.

        A list aligned with ``offset_``, or the one class-conditional module.
        """
        if self._conditional():
            return self.reconstructors_[0].module_
        return [net.module_ for net in self.reconstructors_]

    @contextlib.contextmanager
    def _modules_in_eval_mode(self):
        with contextlib.ExitStack() as stack:
            for net in self.reconstructors_:
                stack.enter_context(eval_mode(net.module_))
            yield

    def _chunked(self, maps, route, compute):
        """``compute(maps_chunk, route_chunk)`` over chunks, without gradients.

        Rows go through the fitted modules in chunks rather than skorch's
        predict, whose data loader indexes one row at a time (most of the
        scoring time on large X) and draws a seed from torch's global generator.
        """
        results = []
        param = next(self.reconstructors_[0].module_.parameters(), None)
        device = "cpu" if param is None else param.device
        size = max(
            1, min(_SCORING_CHUNK, _SCORING_CHUNK_VALUES // max(1, maps.shape[1]))
        )
        with torch.no_grad(), self._modules_in_eval_mode():
            for start in range(0, len(maps), size):
                chunk = maps[start : start + size]
                if any(stride < 0 for stride in chunk.strides):
                    chunk = chunk.copy()  # torch refuses negative strides
                # On the autoencoders' device once, not once per autoencoder.
                chunk = torch.as_tensor(chunk).to(device)
                results.append(compute(chunk, route[start : start + size]))
        return results

    def _score(self, maps, route):
        """Error of each row under its autoencoder ``route``, with the contrast."""
        if len(maps) == 0:
            return np.empty(0, dtype=np.float64)
        scores = self._chunked(
            maps,
            route,
            lambda chunk, r: self._score_tensor(chunk, route_to_tensor(r, chunk)),
        )
        return np.concatenate([s.cpu().numpy() for s in scores])

    def _score_tensor(self, maps, route):
        n_class = len(self.class_labels_)
        return reconstruction_scores(
            maps,
            route,
            self._modules(),
            metric=self.metric,
            contrast=self.contrast,
            n_class=n_class,
            # Autoencoders that no row has trained yet (partial_fit) have
            # nothing to compare with.
            comparable=torch.as_tensor(self.n_samples_seen_[:n_class] > 0),
        )

    def _route(self, classes):
        """Index into ``reconstructors_`` of each row's autoencoder."""
        labels = self.class_labels_
        index = np.searchsorted(labels, classes)
        has_own = np.zeros(classes.shape, dtype=bool)
        inside = index < labels.size
        has_own[inside] = labels[index[inside]] == classes[inside]
        if has_own.all():
            return index
        others = classes[~has_own]
        unseen = np.setdiff1d(others, self.fallback_classes_)
        if unseen.size and self.unseen_class == "error":
            raise ValueError(
                f"X has rows of classes {unseen.tolist()[:10]} that had no benign "
                "row at fit time. Refit with these classes in the benign data, or "
                "with unseen_class='fallback' to score them with the shared "
                "fallback autoencoder."
            )
        if self.fallback_index_ is None:
            raise ValueError(
                f"X has rows of classes {unseen.tolist()[:10]} that had no benign "
                "row at fit time, and no fallback autoencoder was trained "
                "(unseen_class was 'error' at fit time): refit with "
                "unseen_class='fallback'."
            )
        return np.where(has_own, index, self.fallback_index_)

    def _check_fitted_with(self):
        if (self.metric, self.class_column, self.contrast) != self._fitted_with:
            metric, class_column, contrast = self._fitted_with
            raise ValueError(
                "metric, class_column or contrast changed since fit (fitted with "
                f"metric={metric!r}, class_column={class_column!r}, "
                f"contrast={contrast!r}); the thresholds belong to the fitted "
                "values: refit the detector."
            )

    def _maps_and_route(self, X):
        """Validated maps and the index of each row's autoencoder."""
        check_is_fitted(self)
        self._check_fitted_with()
        X = self._validate(X, reset=False)
        classes, maps = self._split(X)
        if classes is None:
            route = np.zeros(X.shape[0], dtype=np.intp)
        else:
            route = self._route(classes)
        untrained = [i for i in np.unique(route) if self.n_samples_seen_[i] == 0]
        if untrained:
            labels = [
                "fallback" if i == self.fallback_index_ else int(self.class_labels_[i])
                for i in untrained
            ]
            raise ValueError(
                f"X has rows for the autoencoders of classes {labels}, which have "
                "not been trained on any row yet: feed partial_fit rows of these "
                "classes first."
            )
        return maps, route

    def torch_decision_function(self, Xt):
        """:meth:`decision_function` of a torch tensor, differentiable in its maps.

        The one computation behind :meth:`decision_function`, exposed for
        attacks: ``Xt`` holds rows as ``ExplanationTransformer.torch_transform``
        writes them (class column, then the map), and gradients flow from the
        result back to the map values (the class routes each row and is not
        differentiated). No input validation: pass what the transformer made.

        Parameters
        ----------
        Xt : torch.Tensor of shape (n_samples, n_features)
            Rows of explanation maps with the class column.

        Returns
        -------
        decision : torch.Tensor of shape (n_samples,), float64
            ``score_samples - offset_`` of each row: negative means flagged.

        Examples
        --------
        >>> import numpy as np, torch
        >>> from skadv import ExplanationReconstructionDetector
        >>> rng = np.random.default_rng(0)
        >>> X = np.column_stack([rng.integers(0, 2, 100), rng.random((100, 8))])
        >>> detector = ExplanationReconstructionDetector(random_state=0).fit(X)
        >>> Xt = torch.tensor(X[:3], dtype=torch.float32, requires_grad=True)
        >>> decision = detector.torch_decision_function(Xt)
        >>> bool(np.allclose(decision.detach().numpy(),
        ...                  detector.decision_function(X[:3])))
        True
        >>> decision.sum().backward()  # gradients reach the map values
        >>> Xt.grad.shape
        torch.Size([3, 9])
        """
        scores, route = self._torch_scores(Xt)
        offsets = torch.as_tensor(self.offset_, dtype=torch.float64, device=Xt.device)
        return -scores - offsets[route]

    def torch_score_samples(self, Xt):
        """:meth:`score_samples` of a torch tensor, differentiable in its maps.

        See :meth:`torch_decision_function`; this is the score before the
        class's threshold is subtracted.

        Parameters
        ----------
        Xt : torch.Tensor of shape (n_samples, n_features)
            Rows of explanation maps with the class column.

        Returns
        -------
        scores : torch.Tensor of shape (n_samples,), float64
            Higher for more benign rows.
        """
        return -self._torch_scores(Xt)[0]

    def _torch_scores(self, Xt):
        check_is_fitted(self)
        self._check_fitted_with()
        column = self.class_column
        if column is None:
            maps = Xt
            route = np.zeros(Xt.shape[0], dtype=np.intp)
        else:
            classes = Xt[:, column].detach().round().to(torch.int64).cpu().numpy()
            maps = torch.cat([Xt[:, :column], Xt[:, column + 1 :]], dim=1)
            route = self._route(classes)
        route = route_to_tensor(route, maps)
        with self._modules_in_eval_mode():
            return self._score_tensor(maps, route), route

    def _scores_and_route(self, X):
        maps, route = self._maps_and_route(X)
        return self._score(maps, route), route

    def reconstruct(self, X):
        """Each row's map as its class's autoencoder reconstructs it.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows of ``ExplanationTransformer`` output.

        Returns
        -------
        reconstructed : ndarray of shape (n_samples, n_features - 1)
            The reconstructed maps (without the class column), float32;
            ``n_features`` columns when ``class_column`` is None.
        """
        maps, route = self._maps_and_route(X)
        if len(maps) == 0:
            return np.empty(maps.shape, dtype=np.float32)
        modules = self._modules()
        parts = self._chunked(
            maps,
            route,
            lambda c, r: reconstruct_routed(modules, c, route_to_tensor(r, c)),
        )
        return np.concatenate([p.float().cpu().numpy() for p in parts])

    def reconstruction_error(self, X):
        """Reconstruction error of each row's map: higher means more adversarial.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows of ``ExplanationTransformer`` output.

        Returns
        -------
        errors : ndarray of shape (n_samples,)
            The error of the row's class autoencoder (``metric``), times the
            class-contrastive factor when ``contrast`` is positive.
        """
        return self._scores_and_route(X)[0]

    def score_samples(self, X):
        """Benign-ness of each row: the negated reconstruction error.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows of ``ExplanationTransformer`` output.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Higher for more benign rows.
        """
        return -self.reconstruction_error(X)

    def decision_function(self, X):
        """Score shifted by each row's class threshold: negative means adversarial.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows of ``ExplanationTransformer`` output.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
            ``score_samples(X) - offset_`` of the row's autoencoder.
        """
        errors, route = self._scores_and_route(X)
        return -errors - self.offset_[route]

    def predict(self, X):
        """Predict +1 for benign and -1 for adversarial rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows of ``ExplanationTransformer`` output.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            +1 benign, -1 adversarial.
        """
        return np.where(self.decision_function(X) < 0, -1, 1)
