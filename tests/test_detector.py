import re

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, TunedThresholdClassifierCV
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import Callback

from skadv import (
    ConvAutoencoder,
    DetectorClassifier,
    ExplanationReconstructionDetector,
    make_reconstructor,
)
from skadv._detector import reconstruction_errors
from skadv.metrics import detection_roc_auc, detection_scorers

FAST = {"max_epochs": 20, "batch_size": 16}


def detector(**params):
    params.setdefault("reconstructor", make_reconstructor(**FAST))
    params.setdefault("random_state", 0)
    return ExplanationReconstructionDetector(**params)


@pytest.fixture(scope="module")
def fitted(maps):
    benign, _ = maps
    return detector().fit(benign)


def test_flags_maps_it_cannot_reconstruct(maps, fitted):
    benign, odd = maps
    X = np.vstack([benign, odd])
    y = np.r_[np.ones(len(benign)), -np.ones(len(odd))]
    auc = detection_roc_auc(y, fitted.reconstruction_error(X))
    assert auc > 0.95  # measured 1.0: noise maps are far from every pattern
    assert (fitted.predict(odd) == -1).mean() > 0.9


def test_score_signs_and_offsets_are_consistent(maps, fitted):
    benign, odd = maps
    X = np.vstack([benign, odd])
    errors = fitted.reconstruction_error(X)
    np.testing.assert_array_equal(fitted.score_samples(X), -errors)
    route = np.searchsorted(fitted.class_labels_, X[:, 0].astype(int))
    np.testing.assert_allclose(
        fitted.decision_function(X), -errors - fitted.offset_[route]
    )
    np.testing.assert_array_equal(
        fitted.predict(X), np.where(fitted.decision_function(X) < 0, -1, 1)
    )


@pytest.mark.parametrize("contamination", [0.05, 0.2])
def test_contamination_is_the_benign_training_false_positive_rate(maps, contamination):
    benign, _ = maps
    det = detector(contamination=contamination).fit(benign)
    for c in det.class_labels_:
        flagged = det.predict(benign[benign[:, 0] == c]) == -1
        assert flagged.mean() == pytest.approx(contamination, abs=1 / 60)


def test_top_half_l1_and_mse_match_their_definitions():
    rng = np.random.default_rng(0)
    X, R = rng.random((4, 10)), rng.random((4, 10))
    diff = np.abs(X - R)
    top_half = [np.sort(d)[5:].sum() / 10 for d in diff]  # 10 values: top 5
    np.testing.assert_allclose(reconstruction_errors(X, R), top_half)
    np.testing.assert_allclose(reconstruction_errors(X, R, "mse"), (diff**2).mean(1))


def test_only_benign_rows_train(maps):
    benign, odd = maps
    X = np.vstack([benign, odd])
    y = np.r_[np.ones(len(benign)), -np.ones(len(odd))]
    with_labels = detector().fit(X, y)
    benign_only = detector().fit(benign)
    np.testing.assert_array_equal(
        with_labels.decision_function(X), benign_only.decision_function(X)
    )


@pytest.mark.parametrize("y", [[0, 1], [1.0, 2.0], ["benign", "adversarial"]])
def test_other_label_sets_are_refused(maps, y):
    benign, _ = maps
    labels = np.resize(np.asarray(y), len(benign))
    msg = (
        "y must label each row +1 (benign) or -1 (adversarial), scikit-learn's "
        "outlier convention; got labels"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        detector().fit(benign, labels)


def test_no_benign_row_is_an_error(maps):
    benign, _ = maps
    with pytest.raises(ValueError, match=r"y marks no row as benign \(\+1\)"):
        detector().fit(benign, -np.ones(len(benign)))


@pytest.mark.parametrize("contamination", [0.0, 0.6, -0.1])
def test_contamination_out_of_range(maps, contamination):
    benign, _ = maps
    msg = (
        "The 'contamination' parameter of ExplanationReconstructionDetector must be "
        "a float in the range (0.0, 0.5]"
    )
    with pytest.raises(InvalidParameterError, match=re.escape(msg)):
        detector(contamination=contamination).fit(benign)


def test_non_integer_class_column(maps):
    benign, _ = maps
    X = benign.copy()
    X[0, 0] = 0.5
    msg = "class_column=0 must hold integer class labels"
    with pytest.raises(ValueError, match=msg):
        detector().fit(X)
    with pytest.raises(ValueError, match="non-integer values such as 0.5"):
        detector().fit(X)


def test_class_column_out_of_range(maps):
    benign, _ = maps
    with pytest.raises(ValueError, match="class_column=17 is out of range"):
        detector(class_column=17).fit(benign)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_are_refused(maps, fitted, bad):
    benign, _ = maps
    X = benign.copy()
    X[3, 5] = bad
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        detector().fit(X)
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        fitted.predict(X)


def test_wrong_width_at_predict(maps, fitted):
    benign, _ = maps
    with pytest.raises(ValueError, match="X has 10 features, but"):
        fitted.predict(benign[:, :10])


def test_use_before_fit(maps):
    benign, _ = maps
    for method in ("predict", "decision_function", "score_samples"):
        with pytest.raises(NotFittedError, match="is not fitted yet"):
            getattr(detector(), method)(benign)


def test_small_classes_share_the_fallback(maps):
    benign, _ = maps
    X = np.vstack([benign, benign[benign[:, 0] == 0][:4] + np.r_[7, np.zeros(16)]])
    det = detector(min_class_size=5).fit(X)
    np.testing.assert_array_equal(det.class_labels_, [0, 1, 2])
    np.testing.assert_array_equal(det.fallback_classes_, [7])
    assert len(det.reconstructors_) == 4 and det.offset_.shape == (4,)
    assert np.isfinite(det.decision_function(X[X[:, 0] == 7])).all()


def test_unseen_class_rule(maps, fitted):
    benign, _ = maps
    X = benign[:5].copy()
    X[:, 0] = 9
    msg = "X has rows of classes [9] that had no benign row at fit time"
    with pytest.raises(ValueError, match=re.escape(msg)):
        fitted.predict(X)
    lenient = detector(unseen_class="fallback").fit(benign)
    assert len(lenient.reconstructors_) == 4
    assert np.isfinite(lenient.decision_function(X)).all()


def test_single_reconstructor_without_class_column(maps):
    benign, odd = maps
    det = detector(class_column=None).fit(benign[:, 1:])
    assert len(det.reconstructors_) == 1 and det.class_labels_.size == 0
    assert (det.predict(odd[:, 1:]) == -1).mean() > 0.9


def test_convolutional_reconstructor():
    rng = np.random.default_rng(0)
    blobs = np.zeros((80, 8, 8), dtype=np.float32)
    for i, (r, c) in enumerate(rng.integers(1, 6, size=(80, 2))):
        blobs[i, r : r + 2, c : c + 2] = 1.0
    X = np.column_stack([np.zeros(80), blobs.reshape(80, -1)]).astype(np.float32)
    net = make_reconstructor(ConvAutoencoder, module__input_shape=(8, 8), max_epochs=30)
    det = detector(reconstructor=net).fit(X)
    noise = np.column_stack([np.zeros(20), rng.random((20, 64))]).astype(np.float32)
    assert isinstance(det.reconstructors_[0].module_, ConvAutoencoder)
    y = np.r_[np.ones(80), -np.ones(20)]
    assert detection_roc_auc(y, det.reconstruction_error(np.vstack([X, noise]))) > 0.95


def test_random_state_gives_identical_scores_and_leaves_torch_alone(maps):
    benign, odd = maps
    state = torch.random.get_rng_state()
    a = detector(random_state=3).fit(benign).decision_function(odd)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = detector(random_state=3).fit(benign).decision_function(odd)
    c = detector(random_state=4).fit(benign).decision_function(odd)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_parallel_training_matches_sequential(maps):
    benign, odd = maps
    seq = detector(n_jobs=1).fit(benign).decision_function(odd)
    par = detector(n_jobs=2).fit(benign).decision_function(odd)
    # One torch thread per autoencoder everywhere: the same arithmetic.
    np.testing.assert_array_equal(seq, par)


class CountFits(Callback):
    """Counts autoencoder trainings (class attribute: clones share it)."""

    count = 0

    def on_train_begin(self, net, **kwargs):
        type(self).count += 1


def test_grid_search_over_contamination_does_not_retrain(maps, tmp_path):
    benign, odd = maps
    X = np.vstack([benign, odd])
    y = np.r_[np.ones(len(benign)), -np.ones(len(odd))]
    order = np.random.default_rng(0).permutation(len(X))  # every class in every fold
    X, y = X[order], y[order]
    net = make_reconstructor(**FAST, callbacks=[CountFits()])
    search = GridSearchCV(
        detector(reconstructor=net, memory=str(tmp_path)),
        {"contamination": [0.01, 0.05, 0.1, 0.2, 0.3]},
        scoring=detection_scorers(),
        refit="detection_accuracy",
        cv=3,
    )
    CountFits.count = 0
    search.fit(X, y)
    # 3 folds + the refit on all rows, 3 classes each; not 5 thresholds x 3 folds.
    assert CountFits.count == (3 + 1) * 3
    assert search.cv_results_["mean_test_roc_auc"].min() > 0.95
    # Noise maps are all caught at any threshold: the fewest false positives win.
    assert search.best_params_["contamination"] == 0.01
    assert search.best_score_ > 0.95


def test_tuned_threshold_recipe_on_a_fitted_detector(maps, fitted):
    benign, odd = maps
    rng = np.random.default_rng(1)
    X = np.vstack([benign, odd])
    y = np.r_[np.ones(len(benign)), -np.ones(len(odd))]
    order = rng.permutation(len(X))
    X, y = X[order], y[order]
    tuned = TunedThresholdClassifierCV(
        DetectorClassifier(fitted),
        scoring="balanced_accuracy",
        cv="prefit",
        refit=False,
    ).fit(X, y)
    before = (fitted.predict(X) == y).mean()
    after = (tuned.predict(X) == y).mean()
    assert after >= before and after > 0.95
    np.testing.assert_array_equal(tuned.classes_, [-1, 1])
    np.testing.assert_array_equal(
        tuned.predict(X),
        np.where(fitted.decision_function(X) >= tuned.best_threshold_, 1, -1),
    )


def test_detector_classifier_needs_a_fitted_detector(maps):
    benign, _ = maps
    with pytest.raises(NotFittedError, match="wraps an unfitted detector"):
        DetectorClassifier(detector()).predict(benign)
    wrapped = DetectorClassifier(detector()).fit(benign, np.ones(len(benign)))
    assert wrapped.predict(benign).shape == (len(benign),)


def test_joblib_round_trip_gives_identical_scores(maps, fitted, tmp_path):
    benign, odd = maps
    path = tmp_path / "detector.joblib"
    joblib.dump(fitted, path)
    loaded = joblib.load(path)
    X = np.vstack([benign, odd])
    np.testing.assert_array_equal(
        loaded.decision_function(X), fitted.decision_function(X)
    )


def test_clone_is_unfitted(fitted):
    assert not hasattr(clone(fitted), "reconstructors_")


def test_diverged_autoencoder_is_an_error_not_a_benign_verdict(maps):
    benign, _ = maps
    net = make_reconstructor(optimizer=torch.optim.SGD, lr=float("inf"), max_epochs=1)
    with pytest.raises(ValueError, match="returned non-finite reconstructions"):
        detector(reconstructor=net).fit(benign)


def test_every_class_too_small_uses_the_fallback(maps):
    benign, _ = maps
    tiny = benign[[0, 1, 60, 61, 120]]
    det = detector(min_class_size=10).fit(tiny)
    assert det.class_labels_.size == 0 and det.fallback_index_ == 0
    np.testing.assert_array_equal(det.fallback_classes_, [0, 1, 2])
    assert np.isfinite(det.decision_function(tiny)).all()
    one_row = detector().fit(benign[:1])
    assert one_row.predict(benign[:1]).shape == (1,)


@pytest.mark.parametrize("position", [5, 16])
def test_class_column_anywhere(maps, position):
    benign, odd = maps
    move = lambda X: np.insert(X[:, 1:], position, X[:, 0], axis=1)  # noqa: E731
    first = detector().fit(benign).decision_function(odd)
    elsewhere = detector(class_column=position).fit(move(benign))
    np.testing.assert_array_equal(elsewhere.decision_function(move(odd)), first)


def test_negative_and_large_class_labels(maps):
    benign, odd = maps
    relabel = np.array([-3, 7, 1000], dtype=np.float32)
    X, Xo = benign.copy(), odd.copy()
    X[:, 0], Xo[:, 0] = (
        relabel[benign[:, 0].astype(int)],
        relabel[odd[:, 0].astype(int)],
    )
    det = detector().fit(X)
    np.testing.assert_array_equal(det.class_labels_, [-3, 7, 1000])
    np.testing.assert_array_equal(
        det.decision_function(Xo), detector().fit(benign).decision_function(odd)
    )


def test_parameters_that_shape_the_fit_cannot_change_silently(maps, fitted):
    benign, _ = maps
    changed = clone(fitted).set_params(metric="mse")
    changed.__dict__.update(
        {k: v for k, v in fitted.__dict__.items() if k.endswith("_") or k[0] == "_"}
    )
    with pytest.raises(ValueError, match="metric or class_column changed since fit"):
        changed.predict(benign)
    lenient_now = detector().fit(benign).set_params(unseen_class="fallback")
    X = benign[:3].copy()
    X[:, 0] = 9
    with pytest.raises(ValueError, match="no fallback autoencoder was trained"):
        lenient_now.predict(X)


def test_memory_ignores_verbose(maps, tmp_path, capsys):
    benign, _ = maps
    net = make_reconstructor(**FAST, callbacks=[CountFits()])
    CountFits.count = 0
    detector(reconstructor=net, memory=str(tmp_path)).fit(benign)
    detector(reconstructor=net, memory=str(tmp_path), verbose=2).fit(benign)
    assert CountFits.count == 3


def test_thread_backend_is_reproducible_and_restores_torch_threads(maps):
    from joblib import parallel_config

    benign, odd = maps
    threads = torch.get_num_threads()
    reference = detector().fit(benign).decision_function(odd)
    with parallel_config(backend="threading", n_jobs=3):
        threaded = detector().fit(benign).decision_function(odd)
    np.testing.assert_array_equal(threaded, reference)
    assert torch.get_num_threads() == threads


def test_pandas_input(maps):
    pd = pytest.importorskip("pandas")
    benign, odd = maps
    columns = ["predicted_class"] + [f"explanation{i}" for i in range(16)]
    det = detector().fit(pd.DataFrame(benign, columns=columns))
    np.testing.assert_array_equal(det.feature_names_in_, columns)
    np.testing.assert_array_equal(
        det.decision_function(pd.DataFrame(odd, columns=columns)),
        detector().fit(benign).decision_function(odd),
    )


def test_object_labels_with_the_right_values_are_accepted(maps):
    benign, odd = maps
    X = np.vstack([benign, odd])
    y = np.r_[np.ones(len(benign)), -np.ones(len(odd))].astype(object)
    np.testing.assert_array_equal(
        detector().fit(X, y).decision_function(odd),
        detector().fit(benign).decision_function(odd),
    )


def test_reconstructor_must_be_a_skorch_net(maps):
    from sklearn.neural_network import MLPRegressor

    benign, _ = maps
    with pytest.raises(InvalidParameterError, match="The 'reconstructor' parameter"):
        detector(reconstructor=MLPRegressor()).fit(benign)


def test_nested_reconstructor_parameters(maps):
    benign, _ = maps
    det = detector().set_params(reconstructor__module__hidden=8).fit(benign)
    assert det.reconstructors_[0].module_.encoder[0].out_features == 8


def test_partial_fit_learns_from_a_stream(maps):
    benign, odd = maps
    order = np.random.default_rng(0).permutation(len(benign))
    det = detector()
    for batch in np.array_split(benign[order], 4):
        det.partial_fit(batch, classes=[0, 1, 2])
    np.testing.assert_array_equal(det.n_samples_seen_, [60, 60, 60])
    X = np.vstack([benign, odd])
    y = np.r_[np.ones(len(benign)), -np.ones(len(odd))]
    assert detection_roc_auc(y, det.reconstruction_error(X)) > 0.95
    assert (det.predict(benign) == 1).mean() > 0.8


def test_partial_fit_needs_the_classes_up_front(maps):
    benign, _ = maps
    with pytest.raises(ValueError, match="classes must be passed to the first call"):
        detector().partial_fit(benign)
    det = detector().partial_fit(benign[benign[:, 0] == 0], classes=[0, 1])
    msg = "X has rows for the autoencoders of classes [1], which have not been trained"
    with pytest.raises(ValueError, match=re.escape(msg)):
        det.predict(benign[benign[:, 0] == 1][:3])
    shared = detector(class_column=None).partial_fit(benign[:, 1:])
    assert shared.fallback_index_ == 0 and shared.n_samples_seen_[0] == len(benign)


def test_verbose_shows_progress(maps, capsys):
    benign, _ = maps
    detector(verbose=1).fit(benign)
    assert "autoencoders: 100%" in capsys.readouterr().err
    detector(verbose=2).fit(benign[benign[:, 0] == 0])
    assert "train_loss" in capsys.readouterr().out  # skorch's epoch log


def test_reconstruct_gives_the_maps_behind_the_errors(maps, fitted):
    benign, odd = maps
    X = np.vstack([benign, odd])
    reconstructed = fitted.reconstruct(X)
    assert reconstructed.shape == (len(X), 16) and reconstructed.dtype == np.float32
    np.testing.assert_allclose(
        reconstruction_errors(X[:, 1:], reconstructed),
        fitted.reconstruction_error(X),
        rtol=1e-6,
    )
