"""One class-conditional autoencoder for every class of the detector."""

import numpy as np
import pytest
import torch
from conftest import make_maps
from sklearn.metrics import roc_auc_score

import skadv
from skadv import (
    ConditionalConvAutoencoder,
    ConditionalMLPAutoencoder,
    ExplanationReconstructionDetector,
    make_conditional_reconstructor,
)


def _detector(**params):
    params = {
        "reconstructor": make_conditional_reconstructor(max_epochs=5),
        "random_state": 0,
        **params,
    }
    return ExplanationReconstructionDetector(**params)


@pytest.fixture(scope="module")
def fitted():
    benign, _ = make_maps()
    return _detector().fit(benign)


def test_untrained_embedding_leaves_every_class_the_shared_network():
    # The class embedding starts at zero (gamma 1, beta 0): before training
    # the class input changes nothing; one FiLM step later it does.
    torch.manual_seed(0)
    module = ConditionalMLPAutoencoder(16, n_classes=3, hidden=8)
    maps = torch.rand(4, 16)
    first, other = module(maps, torch.zeros(4)), module(maps, torch.full((4,), 2))
    torch.testing.assert_close(first, other, rtol=0, atol=0)
    loss = (module(maps, torch.zeros(4)) - maps).pow(2).mean()
    loss.backward()
    with torch.no_grad():
        module.film.embedding.weight -= module.film.embedding.weight.grad
    assert not torch.allclose(
        module(maps, torch.zeros(4)), module(maps, torch.full((4,), 2))
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConditionalMLPAutoencoder(16, n_classes=3, hidden=8, embedding_std=3.0),
        lambda: ConditionalConvAutoencoder((4, 4), n_classes=3, embedding_std=3.0),
    ],
)
def test_embedding_std_starts_the_classes_apart(make):
    # Seeded: the embedding holds few values, whose spread varies by seed
    # (seeds 0-99 give 2.5-3.8 for the MLP's 24; the default std 1 gives about 1).
    torch.manual_seed(0)
    module = make()
    weights = module.film.embedding.weight.detach()
    assert 2.0 < float(weights.std()) < 4.0
    maps = torch.rand(4, 16)
    with torch.no_grad():
        first, other = module(maps, torch.zeros(4)), module(maps, torch.full((4,), 2))
    assert float((first - other).abs().max()) > 0.01


@pytest.mark.parametrize(
    ("shape", "strides"),
    [((9, 11), None), ((3, 224, 224), (4, 2, 2)), ((2, 5, 6), (1, 3))],
)
def test_conv_autoencoder_returns_maps_of_the_input_size(shape, strides):
    channels = (4,) * (2 if strides is None else len(strides))
    module = ConditionalConvAutoencoder(
        shape, n_classes=2, channels=channels, strides=strides
    )
    n_features = int(np.prod(shape))
    with torch.no_grad():
        out = module(torch.rand(3, n_features), torch.tensor([0, 1, 1]))
    assert out.shape == (3, n_features)
    assert float(out.min()) > 0 and float(out.max()) < 1  # sigmoid output


def test_conv_autoencoder_parameters_do_not_grow_by_a_network_per_class():
    sizes = [
        sum(
            p.numel()
            for p in ConditionalConvAutoencoder(
                (3, 224, 224), n, channels=(16, 32, 64), strides=(4, 2, 2)
            ).parameters()
        )
        for n in (10, 1000)
    ]
    # 990 more classes cost 990 embedding rows of 4 * 112 - 2 * 64 numbers.
    assert sizes[1] - sizes[0] == 990 * 320


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"input_shape": (2, 3, 4, 5)}, r"input_shape must be \(C, H, W\) or \(H, W\)"),
        (
            {"input_shape": (8, 8), "strides": (2,)},
            "strides must hold one positive int",
        ),
        (
            {"input_shape": (8, 8), "strides": (2, 0)},
            "strides must hold one positive int",
        ),
    ],
)
def test_conv_autoencoder_refuses_bad_shapes(params, message):
    with pytest.raises(ValueError, match=message):
        ConditionalConvAutoencoder(n_classes=2, channels=(4, 4), **params)


def test_factory_picks_the_module_from_the_shape():
    assert make_conditional_reconstructor().module is ConditionalMLPAutoencoder
    net = make_conditional_reconstructor([3, 8, 8], max_epochs=3)
    assert net.module is ConditionalConvAutoencoder
    assert net.module__input_shape == (3, 8, 8) and net.max_epochs == 3


def test_one_network_serves_every_class(fitted):
    benign, odd = make_maps()
    assert len(fitted.reconstructors_) == 1
    module = fitted.reconstructors_[0].module_
    # Three classes, no shared slot (every class large, unseen_class="error").
    assert module.film.embedding.num_embeddings == 3
    assert fitted.offset_.shape == (3,) and fitted.fallback_index_ is None
    np.testing.assert_array_equal(fitted.n_samples_seen_, [60, 60, 60])
    scores = -fitted.decision_function(np.vstack([benign, odd]))
    labels = np.r_[np.zeros(len(benign)), np.ones(len(odd))]
    assert roc_auc_score(labels, scores) > 0.9
    # Each class's threshold flags its share of its own training rows.
    assert np.mean(fitted.predict(benign) == -1) == pytest.approx(0.05, abs=0.01)


def test_reconstruct_is_the_module_under_each_class(fitted):
    benign, _ = make_maps()
    rows = benign[::20]
    with torch.no_grad():
        expected = fitted.reconstructors_[0].module_.eval()(
            torch.tensor(rows[:, 1:]), torch.tensor(rows[:, 0]).long()
        )
    np.testing.assert_allclose(fitted.reconstruct(rows), expected.numpy(), rtol=1e-6)


def _assert_same_decision(detector, X):
    Xt = torch.tensor(X, requires_grad=True)
    decision = detector.torch_decision_function(Xt)
    np.testing.assert_allclose(
        decision.detach().numpy(), detector.decision_function(X), rtol=1e-12
    )
    decision.sum().backward()
    assert torch.isfinite(Xt.grad).all() and Xt.grad.abs().sum() > 0


@pytest.mark.parametrize("contrast", [0.0, 0.5])
def test_torch_decision_function_is_decision_function(contrast):
    # Class 2 is too small for a slot of its own and class 7 was never seen:
    # both go to the shared slot, which learns every row.
    benign, odd = make_maps()
    small = np.vstack([benign[benign[:, 0] != 2], benign[benign[:, 0] == 2][:5]])
    detector = _detector(
        contrast=contrast, min_class_size=10, unseen_class="fallback"
    ).fit(small)
    assert detector.fallback_classes_.tolist() == [2]
    assert detector.fallback_index_ == 2
    np.testing.assert_array_equal(detector.n_samples_seen_, [60, 60, len(small)])
    assert detector.reconstructors_[0].module_.film.embedding.num_embeddings == 3
    unseen = odd[:4].copy()
    unseen[:, 0] = 7
    _assert_same_decision(detector, np.vstack([small[::9], odd, unseen]))


def test_contrast_separates_classes_like_per_class_autoencoders():
    # A map of class 0 routed to class 1 (as a misclassified input is) is
    # rebuilt well under class 0: the contrast raises its score.
    benign, _ = make_maps()
    plain = _detector().fit(benign)
    contrastive = _detector(contrast=1.0).fit(benign)
    swapped = benign[benign[:, 0] == 0][:20].copy()
    swapped[:, 0] = 1
    ratio = contrastive.reconstruction_error(swapped) / plain.reconstruction_error(
        swapped
    )
    assert np.all(ratio > 1)


def test_partial_fit_streams_into_one_network():
    benign, odd = make_maps()
    detector = _detector()
    order = np.random.default_rng(0).permutation(len(benign))
    for chunk in np.array_split(benign[order], 3):
        detector.partial_fit(chunk, classes=[0, 1, 2])
    assert len(detector.reconstructors_) == 1
    np.testing.assert_array_equal(detector.n_samples_seen_, [60, 60, 60])
    assert np.isfinite(detector.offset_).all()
    labels = np.r_[np.zeros(len(benign)), np.ones(len(odd))]
    scores = -detector.decision_function(np.vstack([benign, odd]))
    assert roc_auc_score(labels, scores) > 0.8


def test_conv_detector_on_image_shaped_maps():
    benign, odd = make_maps(n_features=64)
    detector = _detector(
        reconstructor=make_conditional_reconstructor((8, 8), max_epochs=5, lr=1e-2)
    ).fit(benign)
    assert isinstance(detector.reconstructors_[0].module_, ConditionalConvAutoencoder)
    scores = -detector.decision_function(np.vstack([benign, odd]))
    labels = np.r_[np.zeros(len(benign)), np.ones(len(odd))]
    assert roc_auc_score(labels, scores) > 0.8


def test_save_and_load_give_identical_scores(fitted, tmp_path):
    benign, odd = make_maps()
    path = tmp_path / "conditional.skadv"
    skadv.save(fitted, path)
    loaded = skadv.load(path)  # skadv's own module: no modules= needed
    X = np.vstack([benign[::10], odd])
    np.testing.assert_array_equal(
        loaded.decision_function(X), fitted.decision_function(X)
    )
