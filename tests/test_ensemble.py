"""EnsembleDetector: members' conformal p-values combined and calibrated again."""

import re

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.covariance import EllipticEnvelope
from sklearn.ensemble import IsolationForest
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from skadv import (
    ActivationTransformer,
    ClassConditionalGaussianDetector,
    ConformalDetector,
    EnsembleDetector,
    ExplanationReconstructionDetector,
    ExplanationTransformer,
    RawInputTransformer,
    combine_p_values,
    conformal_combined_p_values,
    conformal_p_values,
    make_reconstructor,
)
from skadv.attacks import make_adversarial
from skadv.datasets import load_digits
from skadv.metrics import detection_roc_auc, roc_auc_scorer
from skadv.models import make_digits_classifier


def flatten(X):
    return X.reshape(len(X), -1)


def _members():
    return [
        ("forest", IsolationForest(n_estimators=20, random_state=0)),
        ("envelope", EllipticEnvelope(random_state=0)),
    ]


def _gaussian(rng, n, shift=0.0):
    return rng.normal(shift, 1.0, size=(n, 3))


def test_p_values_are_the_calibrated_combination():
    rng = np.random.default_rng(0)
    X = _gaussian(rng, 400)
    ensemble = EnsembleDetector(_members(), random_state=0).fit(X)
    assert ensemble.calibration_scores_.shape == (80, 2)
    new = np.r_[_gaussian(rng, 20), _gaussian(rng, 20, shift=4.0)]
    scores = np.column_stack([d.score_samples(new) for d in ensemble.detectors_])
    member = ensemble.member_p_values(new)
    for j in range(2):
        np.testing.assert_allclose(
            member[:, j],
            conformal_p_values(ensemble.calibration_scores_[:, j], scores[:, j]),
        )
    p = ensemble.p_value(new)
    np.testing.assert_allclose(
        p, conformal_combined_p_values(ensemble.calibration_scores_, scores, "fisher")
    )
    np.testing.assert_array_equal(ensemble.score_samples(new), p)
    np.testing.assert_allclose(ensemble.decision_function(new), p - 0.05)
    np.testing.assert_array_equal(ensemble.predict(new), np.where(p < 0.05, -1, 1))
    assert np.all(ensemble.predict(new[20:]) == -1)
    assert list(ensemble.named_detectors_) == ["forest", "envelope"]
    assert ensemble.named_detectors_["forest"] is ensemble.detectors_[0]


@pytest.mark.parametrize("combine", ["fisher", "min", "mean", "bonferroni"])
def test_ensemble_fpr_on_fresh_benign_rows(combine):
    """(a) for the ensemble: two dependent members, FPR at most contamination."""
    fprs = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        ensemble = EnsembleDetector(
            _members(), combine=combine, calibration_size=400, random_state=seed
        ).fit(_gaussian(rng, 1000))
        fprs.append(np.mean(ensemble.predict(_gaussian(rng, 3000)) == -1))
    # Per seed, Beta(20, 381) (mean 0.050, std 0.011) for the calibrated
    # rules, lower with ties; Bonferroni is conservative. Measured (seeds
    # 0-2): fisher 0.039 0.056 0.058, min 0.044 0.061 0.064, mean 0.056 0.053
    # 0.057, bonferroni 0.043 0.038 0.035.
    assert max(fprs) < 0.05 + 0.035
    if combine == "bonferroni":
        assert np.mean(fprs) < 0.045
    else:
        assert abs(np.mean(fprs) - 0.05) < 0.015


@pytest.fixture(scope="module")
def digits_attack():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=0
    )
    model = make_digits_classifier(random_state=0).fit(X_train, y_train)
    X_adv, ok = make_adversarial(
        model, X_test, y_test, attack="fgsm", eps=0.2, random_state=0
    )
    X_eval = np.concatenate([X_test, X_adv[ok]])
    y_eval = np.r_[np.ones(len(X_test)), -np.ones(ok.sum())]
    return model, X_train, X_eval, y_eval


def _digits_members(model):
    return [
        (
            "saliency",
            make_pipeline(
                ExplanationTransformer(model, method="input_x_gradient"),
                ExplanationReconstructionDetector(
                    reconstructor=make_reconstructor(max_epochs=50), random_state=0
                ),
            ),
        ),
        (
            "pixels",
            make_pipeline(
                FunctionTransformer(flatten), IsolationForest(random_state=0)
            ),
        ),
    ]


@pytest.fixture(scope="module")
def digits_ensemble(digits_attack):
    model, X_train, _, _ = digits_attack
    with torch.random.fork_rng():
        return EnsembleDetector(_digits_members(model), random_state=0).fit(X_train)


def test_ensemble_on_digits_fgsm(digits_attack, digits_ensemble):
    """(b) the ensemble is about as good as its best member, and keeps the FPR."""
    _, _, X_eval, y_eval = digits_attack
    ensemble = digits_ensemble
    member_auc = [
        detection_roc_auc(y_eval, -d.score_samples(X_eval)) for d in ensemble.detectors_
    ]
    auc = {}
    for combine in ("fisher", "min"):
        ensemble.set_params(combine=combine)
        auc[combine] = detection_roc_auc(y_eval, -ensemble.p_value(X_eval))
    ensemble.set_params(combine="fisher")
    # Measured: saliency 0.749, pixels 0.975 (FGSM at eps 0.2 moves every
    # pixel by 0.2: plain to see); fisher 0.954, min 0.963. The weak member
    # costs Fisher 0.02 of AUC; the ensemble still far exceeds the weaker one.
    best = max(member_auc)
    assert member_auc[1] > 0.95 and member_auc[0] > 0.65
    assert auc["fisher"] >= best - 0.03
    assert auc["min"] >= best - 0.02
    # 540 benign test digits against 252 calibration rows: measured 0.031.
    benign = ensemble.predict(X_eval[y_eval == 1])
    assert np.mean(benign == -1) < 0.05 + 0.035


def test_grid_search_over_member_parameters(digits_attack, digits_ensemble):
    """The members' parameters are grid parameters; y picks the benign rows."""
    model, X_train, X_eval, y_eval = digits_attack
    params = digits_ensemble.get_params()
    assert params["saliency__explanationtransformer__method"] == "input_x_gradient"
    assert params["pixels__isolationforest__n_estimators"] == 100
    forest = make_pipeline(FunctionTransformer(flatten), IsolationForest())
    cheap = EnsembleDetector(
        [
            ("forest", forest),
            ("lof", make_pipeline(FunctionTransformer(flatten), LocalOutlierFactor())),
        ],
        combine="min",
        random_state=0,
    ).set_params(
        forest__isolationforest__random_state=0, lof__localoutlierfactor__novelty=True
    )
    search = GridSearchCV(
        cheap,
        {"lof__localoutlierfactor__n_neighbors": [2, 50], "forest": [forest, "drop"]},
        scoring=roc_auc_scorer,
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    ).fit(X_eval, y_eval)
    # Measured mean ROC AUC: both members 0.955 (2 neighbours) and 0.944 (50);
    # the LOF alone 0.764 (2) and 0.434 (50).
    assert search.best_params_["lof__localoutlierfactor__n_neighbors"] == 2
    assert search.best_params_["forest"] is forest
    assert search.best_score_ > 0.93
    scores = dict(
        zip(
            [
                str(p["forest"]) + str(p["lof__localoutlierfactor__n_neighbors"])
                for p in search.cv_results_["params"]
            ],
            search.cv_results_["mean_test_score"],
            strict=True,
        )
    )
    assert scores["drop50"] < scores["drop2"] - 0.2


def _view_members(net):
    """Three views of one model, each with its detector."""

    def reconstruction():
        return ExplanationReconstructionDetector(
            reconstructor=make_reconstructor(max_epochs=2), random_state=0
        )

    return [
        ("saliency", make_pipeline(ExplanationTransformer(net), reconstruction())),
        (
            "pixels",
            make_pipeline(RawInputTransformer(net, bit_depth=1), reconstruction()),
        ),
        (
            "activations",
            make_pipeline(
                ActivationTransformer(net), ClassConditionalGaussianDetector()
            ),
        ),
    ]


def test_views_of_one_model_share_its_passes(digits_fgsm):
    """Members' views of one model read one forward and one backward pass per
    batch; every score is the member's own, bit for bit."""
    net = digits_fgsm.net
    X = np.concatenate([digits_fgsm.X_test[:150], digits_fgsm.X_adv[:100]])
    with torch.random.fork_rng():
        ensemble = EnsembleDetector(
            _view_members(net), combine="bonferroni", random_state=0
        ).fit(digits_fgsm.X_train[:500])
    own = np.column_stack([d.score_samples(X) for d in ensemble.detectors_])
    np.testing.assert_array_equal(ensemble._member_scores(X), own)
    np.testing.assert_array_equal(
        ensemble.p_value(X),
        conformal_combined_p_values(ensemble.calibration_scores_, own, "bonferroni"),
    )
    calls = {"forward": 0, "backward": 0}

    def count_backward(grad):
        calls["backward"] += 1

    def on_output(layer, inputs, output):
        calls["forward"] += 1
        if output.requires_grad:
            output.register_hook(count_backward)

    handle = net.module_.register_forward_hook(on_output)
    try:
        ensemble.decision_function(X)
    finally:
        handle.remove()
    assert calls == {"forward": 1, "backward": 1}  # 250 rows: one batch of 256
    # The attacks' torch path: every member through its own torch_transform.
    # Weighted: the second member gets three quarters of the budget.
    two = EnsembleDetector(
        _view_members(net)[:2], combine="bonferroni", weights=[1, 3], random_state=0
    )
    with torch.random.fork_rng():
        two.fit(digits_fgsm.X_train[:500])
    x = torch.tensor(X[:40], requires_grad=True)
    decision = two.torch_decision_function(x)
    np.testing.assert_allclose(
        decision.detach().numpy(), two.decision_function(X[:40]), atol=1e-6
    )
    (grad,) = torch.autograd.grad(decision.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_weighted_combinations():
    p = np.array([[0.03, 0.5], [0.5, 0.01], [0.2, 0.3]])
    for method in ("bonferroni", "min", "mean"):
        np.testing.assert_allclose(
            combine_p_values(p, method, weights=[2.0, 2.0]), combine_p_values(p, method)
        )
    # Budget shares 3/4 and 1/4: p / share.
    np.testing.assert_allclose(
        combine_p_values(p, "bonferroni", weights=[3, 1]), [0.04, 0.04, 0.8 / 3]
    )
    np.testing.assert_allclose(
        combine_p_values(p, "min", weights=[3, 1]), [0.02, 0.02, 0.4 / 3]
    )
    np.testing.assert_allclose(
        combine_p_values(p, "mean", weights=[3, 1]), [0.1475, 0.3775, 0.225]
    )
    with pytest.raises(ValueError, match="Fisher's method has no weighted form"):
        combine_p_values(p, "fisher", weights=[1, 1])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "weights must hold one weight per detector (2); got shape (3,)"
        ),
    ):
        combine_p_values(p, "min", weights=[1, 1, 1])


def test_weighted_ensemble():
    """Member j is flagged alone below its share w_j of contamination."""
    rng = np.random.default_rng(0)
    X = _gaussian(rng, 600)
    ensemble = EnsembleDetector(
        [*_members(), ("third", "drop")],
        combine="bonferroni",
        weights=[3, 1, 5],  # the dropped member's weight is ignored
        calibration_size=300,
        random_state=0,
    ).fit(X)
    np.testing.assert_allclose(ensemble.weights_, [0.75, 0.25])
    new = np.r_[_gaussian(rng, 200), _gaussian(rng, 20, shift=4.0)]
    member = ensemble.member_p_values(new)
    np.testing.assert_allclose(
        ensemble.p_value(new),
        np.minimum(1, np.minimum(member[:, 0] / 0.75, member[:, 1] / 0.25)),
    )
    flagged = ensemble.predict(new) == -1
    np.testing.assert_array_equal(
        flagged, (member[:, 0] < 0.75 * 0.05) | (member[:, 1] < 0.25 * 0.05)
    )
    assert flagged[200:].all() and flagged[:200].mean() < 0.1


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"weights": [1, 2, 3]},
            "weights must hold one weight per detector (2, dropped ones included); "
            "got shape (3,).",
        ),
        ({"weights": [1, 0]}, "weights must be positive and finite; got [1.0, 0.0]."),
        (
            {"weights": [1, 2], "combine": "fisher"},
            "weights apply to combine='bonferroni', 'min' or 'mean'; got "
            "combine='fisher'.",
        ),
    ],
)
def test_invalid_weights(params, message):
    X = np.random.default_rng(0).normal(size=(200, 2))
    with pytest.raises(ValueError, match=re.escape(message)):
        EnsembleDetector(_members(), **{"combine": "min", **params}).fit(X)


def test_get_set_params_and_clone():
    ensemble = EnsembleDetector(_members(), combine="min", random_state=0)
    params = ensemble.get_params(deep=True)
    assert params["forest"] is ensemble.detectors[0][1]
    assert params["forest__n_estimators"] == 20
    assert params["envelope__support_fraction"] is None
    assert "detectors" in params and "forest" not in ensemble.get_params(deep=False)
    ensemble.set_params(forest__n_estimators=5, combine="mean")
    assert ensemble.named_detectors["forest"].n_estimators == 5
    assert ensemble.combine == "mean"
    replacement = IsolationForest(n_estimators=3)
    ensemble.set_params(forest=replacement)
    assert ensemble.named_detectors["forest"] is replacement
    cloned = clone(ensemble)
    assert cloned.named_detectors["forest"] is not replacement
    assert cloned.named_detectors["forest"].n_estimators == 3
    assert cloned.get_params(deep=False)["combine"] == "mean"


def test_dropped_member_and_identical_refit(tmp_path):
    rng = np.random.default_rng(0)
    X = _gaussian(rng, 300)
    ensemble = EnsembleDetector(_members(), random_state=0)
    ensemble.set_params(envelope="drop").fit(X)
    assert list(ensemble.named_detectors_) == ["forest"]
    # one member: the ensemble is that member's conformal detector
    single = ConformalDetector(_members()[0][1], random_state=0).fit(X)
    np.testing.assert_allclose(ensemble.p_value(X), single.p_value(X))
    joblib.dump(ensemble, tmp_path / "e.joblib")
    np.testing.assert_array_equal(
        joblib.load(tmp_path / "e.joblib").p_value(X), ensemble.p_value(X)
    )
    np.testing.assert_array_equal(
        clone(ensemble).fit(X).p_value(X), ensemble.p_value(X)
    )


def test_parallel_fit_gives_the_same_members():
    rng = np.random.default_rng(0)
    X = _gaussian(rng, 300)
    one = EnsembleDetector(_members(), random_state=0).fit(X)
    two = EnsembleDetector(_members(), n_jobs=2, random_state=0).fit(X)
    np.testing.assert_array_equal(one.p_value(X), two.p_value(X))


def test_class_conditional_ensemble():
    rng = np.random.default_rng(0)
    classes = np.repeat([0, 1], 300)
    X = np.column_stack([classes, rng.normal(size=(600, 2)) * (1 + classes[:, None])])
    ensemble = EnsembleDetector(
        _members(), class_column=0, calibration_size=0.3, random_state=0
    ).fit(X)
    np.testing.assert_array_equal(
        np.unique(ensemble.calibration_classes_, return_counts=True)[1], [90, 90]
    )
    new = X[:5]
    cal = ensemble.calibration_scores_[ensemble.calibration_classes_ == 0]
    scores = np.column_stack([d.score_samples(new) for d in ensemble.detectors_])
    np.testing.assert_allclose(
        ensemble.p_value(new), conformal_combined_p_values(cal, scores, "fisher")
    )


@pytest.mark.parametrize(
    "detectors, message",
    [
        ([], "detectors must be a non-empty list of (name, detector) tuples; got []."),
        (
            [("a", IsolationForest()), ("a", IsolationForest())],
            "detectors have duplicate names ['a']: each needs a name of its own",
        ),
        ([("a", "drop")], "Every detector is 'drop': at least one is needed."),
        (
            [("a", FunctionTransformer())],
            "Detector 'a' (FunctionTransformer) must have fit and score_samples",
        ),
        ([("a__b", IsolationForest())], "Estimator names must not contain __"),
    ],
)
def test_invalid_detectors(detectors, message):
    X = np.zeros((100, 2))
    with pytest.raises(ValueError, match=re.escape(message)):
        EnsembleDetector(detectors).fit(X)


def test_too_few_calibration_rows():
    X = np.random.default_rng(0).normal(size=(50, 2))
    ensemble = EnsembleDetector(_members(), contamination=0.01, calibration_size=0.5)
    msg = (
        "calibration_size=0.5 leaves 25 benign calibration rows (n_samples = 50); "
        "contamination=0.01 needs at least 100"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        ensemble.fit(X)
    with pytest.raises(ValueError, match="'combine' parameter of EnsembleDetector"):
        EnsembleDetector(_members(), combine="stouffer").fit(X)


class EnsembleIgnoringY(EnsembleDetector):
    """The ensemble with ``y`` dropped in fit (see ConformalIgnoringY)."""

    def fit(self, X, y=None):
        return super().fit(X)


_TRAIN_NOT_CALIBRATED = (
    "the threshold is a quantile of held-out rows' combined p-values, by design "
    "not of the training rows': the share of training rows flagged is not "
    "exactly contamination"
)


def _expected_failed_checks(estimator):
    return {
        "check_outliers_train": _TRAIN_NOT_CALIBRATED,
        "check_outliers_fit_predict": _TRAIN_NOT_CALIBRATED,
    }


@parametrize_with_checks(
    [
        EnsembleIgnoringY(
            [
                ("forest", IsolationForest(n_estimators=10, random_state=0)),
                ("lof", LocalOutlierFactor(n_neighbors=5, novelty=True)),
            ],
            calibration_size=0.5,
            contamination=0.25,
            random_state=0,
        )
    ],
    expected_failed_checks=_expected_failed_checks,
    xfail_strict=True,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
