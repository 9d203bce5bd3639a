"""A detector's robustness report: plain and adaptive attacks at a fixed threshold."""

import numbers
import time

import numpy as np

from skadv.attacks._adaptive import (
    _pipeline_parts,
    _predicted_classes,
    adaptive_attack_suite,
    make_adaptive_adversarial,
)
from skadv.metrics import detection_roc_auc


def _report(detector, benign_score, X_adv, success, evaded, seconds):
    """Rates over the attacked inputs; AUC and TPR over the successful ones."""
    n_success = int(success.sum())
    row = {
        "attack_success_rate": float(success.mean()),
        "evasion_rate": float(evaded.mean()),
        "n_attacked": int(success.size),
        "n_success": n_success,
        # Which inputs got through, so that reports of different attacks on
        # the same inputs can be combined (an input is through when any got it).
        "evaded_index": np.flatnonzero(evaded).tolist(),
        "roc_auc": None,
        "tpr_at_threshold": None,
        "seconds": round(seconds, 2),
    }
    if n_success:
        adv_score = -detector.decision_function(X_adv[success])
        labels = np.r_[np.ones(len(benign_score)), -np.ones(n_success)]
        row["roc_auc"] = detection_roc_auc(labels, np.r_[benign_score, adv_score])
        row["tpr_at_threshold"] = float(1 - evaded.sum() / n_success)
    return row


def evaluate_robustness(
    detector,
    X,
    y,
    *,
    X_benign,
    eps=(0.1, 0.3),
    max_iter=200,
    suite_params=None,
    batch_size=128,
    n_jobs=None,
    random_state=0,
    verbose=0,
):
    """How a fitted detector fares against attacks that ignore it and that know it.

    The threshold is the one the detector was fitted with (fixed on benign
    data before any attack, never tuned per attack). Its benign
    false-positive rate is measured on ``X_benign``. Then, for each eps, on the
    inputs of ``X`` that the model classifies correctly: plain PGD (the
    classifier's margin only, :func:`make_adaptive_adversarial` with
    ``method="pgd"``) and the adaptive suite (:func:`adaptive_attack_suite`).
    Success is judged on the real model and the real fitted detector.

    Parameters
    ----------
    detector : sklearn.pipeline.Pipeline
        A fitted view + detector pipeline.
    X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
        Inputs to attack, in the model's input range [0, 1].
    y : array-like of shape (n_samples,)
        Their true labels; misclassified inputs are left out.
    X_benign : array-like
        Benign inputs not used to fit the detector, for the false-positive
        rate and the negatives of the ROC AUC.
    eps : sequence of float, default=(0.1, 0.3)
        L-infinity budgets.
    max_iter : int, default=200
        Steps of every run (plain PGD and each strategy of the suite).
    suite_params : dict, default=None
        Other arguments of :func:`adaptive_attack_suite` (``methods``,
        ``surrogates``, ``n_targets``, ``n_restarts``, ``quantize``...).
    batch_size : int, default=128
        Inputs attacked at once.
    n_jobs : int, default=None
        Chunks of inputs the suite attacks in parallel (see
        :func:`adaptive_attack_suite`); the results do not depend on it.
    random_state : int, default=0
        Seeds the attacks' random starts.
    verbose : int, default=0
        Print progress when positive.

    Returns
    -------
    report : dict
        ``benign_fpr`` (share of ``X_benign`` flagged), ``n_attacked``
        (correctly classified inputs attacked), ``settings``, and ``results``:
        one row per eps and attack (``"pgd"``, ``"adaptive"``) with
        ``attack_success_rate``, ``evasion_rate`` (misclassified and not
        flagged, over the inputs attacked), ``evaded_index`` (those inputs'
        positions among the inputs attacked), ``roc_auc`` (benign inputs
        against the successful adversarial ones), ``tpr_at_threshold`` (share
        of the successful ones flagged), ``seconds``, and for the suite the
        ``strategies`` it ran.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklearn.pipeline import make_pipeline
    >>> from skadv import ExplanationReconstructionDetector, ExplanationTransformer
    >>> from skadv.attacks import evaluate_robustness
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
    ...     torch.nn.Linear(16, 3))
    >>> X = np.random.default_rng(0).random((80, 1, 8, 8), dtype=np.float32)
    >>> detector = make_pipeline(ExplanationTransformer(model),
    ...     ExplanationReconstructionDetector(min_class_size=1, unseen_class="fallback",
    ...                                       random_state=0)).fit(X[:60])
    >>> y = model(torch.tensor(X[60:])).argmax(1).numpy()
    >>> report = evaluate_robustness(
    ...     detector, X[60:64], y[:4], X_benign=X[60:], eps=[0.1], max_iter=3,
    ...     suite_params={"surrogates": [("straight_through", 10.0)], "n_targets": 0,
    ...                   "square_queries": 10})
    >>> [(row["eps"], row["attack"]) for row in report["results"]]
    [(0.1, 'pgd'), (0.1, 'adaptive')]
    """
    view, _ = _pipeline_parts(detector)
    suite_params = dict(suite_params or {})
    eps = [float(e) for e in np.atleast_1d(eps)]
    if not eps or any(not e > 0 for e in eps):
        raise ValueError(f"eps must be positive floats; got {eps!r}.")
    if not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}.")
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y).astype(np.int64)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)} labels.")
    X_model = X.reshape(len(X), *view.input_shape_)
    predicted = _predicted_classes(view.module_, X_model, batch_size, view.device_)
    correct = predicted == y
    X, y = X[correct], y[correct]
    benign_decision = detector.decision_function(X_benign)
    benign_score = -benign_decision
    report = {
        "benign_fpr": float(np.mean(benign_decision < 0)),
        "n_benign": len(benign_score),
        "n_attacked": int(correct.sum()),
        "settings": {
            "eps": eps,
            "max_iter": max_iter,
            "suite": {k: v for k, v in suite_params.items()},
            "threshold": "the detector's own, fixed at fit on benign data",
        },
        "results": [],
    }
    for e in eps:
        start = time.perf_counter()
        X_adv, success, evaded = make_adaptive_adversarial(
            detector,
            X,
            y,
            eps=e,
            method="pgd",
            max_iter=max_iter,
            batch_size=batch_size,
            random_state=random_state,
        )
        row = _report(
            detector, benign_score, X_adv, success, evaded, time.perf_counter() - start
        )
        report["results"].append({"eps": e, "attack": "pgd", **row})
        if verbose:
            print(_line(e, "pgd", row), flush=True)
        start = time.perf_counter()
        result = adaptive_attack_suite(
            detector,
            X,
            y,
            eps=e,
            max_iter=max_iter,
            batch_size=batch_size,
            n_jobs=n_jobs,
            random_state=random_state,
            verbose=max(verbose - 1, 0),
            **suite_params,
        )
        row = _report(
            detector,
            benign_score,
            result.X_adv,
            result.success,
            result.evaded,
            time.perf_counter() - start,
        )
        row["strategies"] = result.strategies
        report["results"].append({"eps": e, "attack": "adaptive", **row})
        if verbose:
            print(_line(e, "adaptive", row), flush=True)
    return report


def _line(eps, attack, row):
    def f(value):
        return "  n/a" if value is None else f"{value:.3f}"

    return (
        f"eps {eps:.3f} {attack:<9} success {row['attack_success_rate']:.3f}  "
        f"evaded {row['evasion_rate']:.3f}  ROC AUC {f(row['roc_auc'])}  "
        f"TPR@threshold {f(row['tpr_at_threshold'])}  ({row['seconds']:.0f} s)"
    )
