"""The whole method on a small real problem: digits, a CNN, FGSM and PGD."""

import subprocess
import sys

import joblib
import numpy as np
import pytest
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import (
    FixedThresholdClassifier,
    GridSearchCV,
    TunedThresholdClassifierCV,
    train_test_split,
)
from sklearn.pipeline import make_pipeline

from skadv import (
    DetectorClassifier,
    ExplanationReconstructionDetector,
    ExplanationTransformer,
    make_reconstructor,
)
from skadv.attacks import make_adversarial
from skadv.datasets import load_digits
from skadv.metrics import detection_roc_auc, detection_scorers, tpr_at_fpr
from skadv.models import make_digits_classifier


@pytest.fixture(scope="module")
def problem():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=0
    )
    classifier = make_digits_classifier(random_state=0).fit(X_train, y_train)
    X_fgsm, ok = make_adversarial(classifier, X_test, y_test, attack="fgsm", eps=0.3)
    return {
        "classifier": classifier,
        "X_train": X_train,
        "y_train": y_train,
        "X_test": X_test,
        "X_fgsm": X_fgsm[ok],
    }


def make_detector(classifier, **params):
    return make_pipeline(
        ExplanationTransformer(classifier),
        ExplanationReconstructionDetector(
            reconstructor=make_reconstructor(max_epochs=50), random_state=0, **params
        ),
    )


@pytest.fixture(scope="module")
def fitted(problem):
    return make_detector(problem["classifier"]).fit(problem["X_train"])


def test_detects_fgsm_on_held_out_digits(problem, fitted):
    X = np.concatenate([problem["X_test"], problem["X_fgsm"]])
    y = np.r_[np.ones(len(problem["X_test"])), -np.ones(len(problem["X_fgsm"]))]
    score = -fitted.decision_function(X)
    auc = detection_roc_auc(y, score)
    # Measured 0.81 (540 benign test digits, 539 successful FGSM examples at
    # eps 0.3); chance is 0.5.
    assert auc > 0.7
    assert tpr_at_fpr(y, score, fpr=0.05) > 0.2  # measured 0.35
    # contamination=0.05 is a benign-data threshold: held-out FPR stays near it.
    assert (fitted.predict(problem["X_test"]) == -1).mean() < 0.12


def test_grid_search_on_a_labelled_mixed_set(problem, tmp_path):
    X_fgsm_train, ok = make_adversarial(
        problem["classifier"], problem["X_train"], problem["y_train"], eps=0.3
    )
    X = np.concatenate([problem["X_train"], X_fgsm_train[ok]])
    y = np.r_[np.ones(len(problem["X_train"])), -np.ones(ok.sum())]
    order = np.random.default_rng(0).permutation(len(X))
    pipe = make_detector(problem["classifier"], memory=str(tmp_path / "ae"))
    pipe.memory = str(tmp_path / "explanations")
    search = GridSearchCV(
        pipe,
        {"explanationreconstructiondetector__contamination": [0.02, 0.1, 0.3]},
        scoring=detection_scorers(),
        refit="detection_accuracy",
        cv=2,
    ).fit(X[order], y[order])
    assert search.cv_results_["mean_test_roc_auc"].min() > 0.7
    accuracy = search.cv_results_["mean_test_detection_accuracy"]
    assert search.best_score_ == accuracy.max() > 0.6


def test_threshold_tuning_recipes_on_the_fitted_pipeline(problem, fitted):
    X = np.concatenate([problem["X_test"], problem["X_fgsm"]])
    y = np.r_[np.ones(len(problem["X_test"])), -np.ones(len(problem["X_fgsm"]))]
    tuned = TunedThresholdClassifierCV(
        DetectorClassifier(fitted),
        scoring="balanced_accuracy",
        cv="prefit",
        refit=False,
    ).fit(X, y)
    # FrozenEstimator: FixedThresholdClassifier.fit would otherwise refit a clone.
    fixed = FixedThresholdClassifier(
        FrozenEstimator(DetectorClassifier(fitted)), threshold=tuned.best_threshold_
    ).fit(X, y)
    np.testing.assert_array_equal(fixed.predict(X), tuned.predict(X))
    before = np.mean(fitted.predict(X) == y)
    assert tuned.best_score_ >= 0.7 and np.mean(tuned.predict(X) == y) >= before


# The same torch thread count as this session: float32 reductions split across
# another number of threads differ in the last bits (~1e-9 here).
LOAD_AND_SCORE = """
import sys, joblib, numpy as np, torch
torch.set_num_threads(1)
pipe = joblib.load(sys.argv[1])
np.save(sys.argv[3], pipe.decision_function(np.load(sys.argv[2])))
"""


def test_joblib_round_trip_in_a_fresh_process(problem, fitted, tmp_path):
    X = np.concatenate([problem["X_test"][:50], problem["X_fgsm"][:50]])
    joblib.dump(fitted, tmp_path / "detector.joblib")
    np.save(tmp_path / "X.npy", X)
    subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_AND_SCORE,
            str(tmp_path / "detector.joblib"),
            str(tmp_path / "X.npy"),
            str(tmp_path / "scores.npy"),
        ],
        check=True,
    )
    np.testing.assert_array_equal(
        np.load(tmp_path / "scores.npy"), fitted.decision_function(X)
    )
