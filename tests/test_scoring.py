"""One scoring core: the torch computation attacks differentiate is the estimators'."""

import numpy as np
import pytest
import torch
from conftest import make_maps

from skadv import (
    ExplanationReconstructionDetector,
    ExplanationTransformer,
    make_reconstructor,
)
from skadv._scoring import (
    _row_quantile_99,
    normalize_attributions,
    reconstruction_error,
)
from skadv.attacks import make_surrogate


def _detector(**params):
    return ExplanationReconstructionDetector(
        reconstructor=make_reconstructor(max_epochs=5), random_state=0, **params
    )


def _assert_same_decision(detector, X):
    Xt = torch.tensor(X, requires_grad=True)
    decision = detector.torch_decision_function(Xt)
    np.testing.assert_allclose(
        decision.detach().numpy(), detector.decision_function(X), rtol=1e-12
    )
    decision.sum().backward()
    assert torch.isfinite(Xt.grad).all() and Xt.grad.abs().sum() > 0


@pytest.mark.parametrize("n_values", [1, 2, 7, 64, 785])
def test_top_half_l1_is_ko_and_lim_formula(n_values):
    # Ko & Lim's score in numpy: the absolute errors above the row's median
    # (numpy's: the mean of the two middle values), summed, over the count.
    # Quarter steps make ties at the median in many rows.
    rng = np.random.default_rng(n_values)
    maps = np.round(rng.random((40, n_values)) * 4) / 4
    reconstructed = np.round(rng.random((40, n_values)) * 4) / 4
    diff = np.abs(maps - reconstructed)
    median = np.median(diff, axis=1, keepdims=True)
    expected = np.where(diff > median, diff, 0.0).sum(axis=1) / n_values
    got = reconstruction_error(
        torch.tensor(maps, dtype=torch.float32),
        torch.tensor(reconstructed, dtype=torch.float32),
    )
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("n_values", [1, 2, 64, 785])
def test_row_quantile_is_torch_quantile(n_values):
    # The top-k 99th percentile equals torch.quantile's value bit for bit,
    # ties and NaN rows included, and its gradient where no values tie (with
    # ties, each picks its own one of the tied entries).
    rng = np.random.default_rng(n_values)
    tied = torch.tensor(np.round(rng.random((30, n_values)) * 8) / 8)
    tied[::7, 0] = torch.nan
    ours = _row_quantile_99(tied)
    expected = torch.quantile(tied, 0.99, dim=1, keepdim=True)
    assert torch.equal(ours.isnan(), expected.isnan())
    finite = ~expected.isnan()
    assert torch.equal(ours[finite], expected[finite])
    values = torch.tensor(rng.random((30, n_values)), requires_grad=True)
    ours = _row_quantile_99(values)
    expected = torch.quantile(values, 0.99, dim=1, keepdim=True)
    assert torch.equal(ours, expected)
    (grad,) = torch.autograd.grad(ours.sum(), values)
    (expected_grad,) = torch.autograd.grad(expected.sum(), values)
    assert torch.equal(grad, expected_grad)


@pytest.mark.parametrize("metric", ["top_half_l1", "mse"])
@pytest.mark.parametrize("contrast", [0.0, 0.5])
def test_torch_decision_function_is_decision_function(metric, contrast):
    benign, odd = make_maps()
    detector = _detector(metric=metric, contrast=contrast).fit(benign)
    _assert_same_decision(detector, np.vstack([benign[::7], odd]))


@pytest.mark.parametrize("metric", ["top_half_l1", "mse"])
def test_same_decision_without_a_class_column(metric):
    benign, odd = make_maps()
    maps = np.vstack([benign, odd])[:, 1:]
    detector = _detector(metric=metric, class_column=None).fit(benign[:, 1:])
    _assert_same_decision(detector, maps)


@pytest.mark.parametrize("contrast", [0.0, 0.5])
def test_same_decision_on_fallback_routes(contrast):
    # Class 2 has too few rows for an autoencoder of its own, class 7 was never
    # seen: both go to the shared fallback autoencoder.
    benign, odd = make_maps()
    small = np.vstack([benign[benign[:, 0] != 2], benign[benign[:, 0] == 2][:5]])
    detector = _detector(
        contrast=contrast, min_class_size=10, unseen_class="fallback"
    ).fit(small)
    assert detector.fallback_classes_.tolist() == [2]
    unseen = odd[:4].copy()
    unseen[:, 0] = 7
    _assert_same_decision(detector, np.vstack([benign[::9], odd, unseen]))


def test_same_decision_on_sparse_and_constant_maps():
    benign, _ = make_maps()
    detector = _detector(contrast=0.5).fit(benign)
    sparse = np.zeros((3, benign.shape[1]), dtype=np.float32)
    sparse[:, 0] = [0, 1, 2]
    sparse[:, 5] = 1.0  # one non-zero value
    constant = sparse.copy()
    constant[:, 1:] = 0.25
    X = np.vstack([sparse, constant])
    Xt = torch.tensor(X)
    np.testing.assert_allclose(
        detector.torch_decision_function(Xt).detach().numpy(),
        detector.decision_function(X),
        rtol=1e-12,
    )


class _SmallCNN(torch.nn.Module):
    def __init__(self, zero=False, one_pixel=False):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.fc = torch.nn.Linear(4 * 8 * 8, 3)
        with torch.no_grad():
            if zero:  # a zero gradient: constant maps
                self.fc.weight.zero_()
            if one_pixel:  # only one input pixel matters: a sparse map
                self.conv.weight.zero_()
                self.conv.weight[:, 0, 1, 1] = 1.0
                self.fc.weight.zero_()
                self.fc.weight[:, 27] = torch.tensor([1.0, -1.0, 0.5])

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient"])
@pytest.mark.parametrize("normalize", ["percentile", "max", None])
@pytest.mark.parametrize("kind", ["dense", "sparse", "constant"])
def test_torch_transform_is_transform(method, normalize, kind):
    torch.manual_seed(0)
    model = _SmallCNN(zero=kind == "constant", one_pixel=kind == "sparse")
    X = np.random.default_rng(0).random((12, 1, 8, 8), dtype=np.float32)
    transformer = ExplanationTransformer(model, method=method, normalize=normalize).fit(
        X
    )
    expected = transformer.transform(X)
    if kind == "constant" and normalize is not None:
        assert (expected[:, 1:] == 0).all()
    if kind == "sparse" and normalize == "percentile":
        # one pixel (or none, where its ReLU is off): the range fallback
        counts = np.count_nonzero(expected[:, 1:], axis=1)
        assert counts.max() == 1 and (counts == 1).sum() >= 4
    got = transformer.torch_transform(torch.tensor(X)).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # The straight-through surrogate computes the same maps.
    surrogate = make_surrogate(transformer.module_, beta=5.0)
    got = transformer.torch_transform(torch.tensor(X), module=surrogate)
    np.testing.assert_allclose(got.detach().numpy(), expected, atol=1e-6)


def test_the_surrogate_gives_the_map_a_gradient():
    # The saliency map of a ReLU network is piecewise constant: its exact
    # gradient is zero. The straight-through surrogate keeps the map and gives
    # it the curvature of a softplus network.
    torch.manual_seed(0)
    model = _SmallCNN()
    X = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    transformer = ExplanationTransformer(model, normalize=None).fit(X)

    def map_gradient(module):
        x = torch.tensor(X, requires_grad=True)
        maps = transformer.torch_transform(x, module=module)[:, 1:]
        (grad,) = torch.autograd.grad(maps.pow(2).sum(), x)
        return grad

    assert map_gradient(None).abs().max() == 0
    assert map_gradient(make_surrogate(model, beta=10.0)).abs().max() > 1e-3
    softplus = make_surrogate(model, "softplus", beta=10.0)
    assert not torch.equal(softplus(torch.tensor(X)), model(torch.tensor(X)))


def test_torch_transform_refuses_methods_it_cannot_differentiate():
    X = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    transformer = ExplanationTransformer(_SmallCNN(), method="deeplift").fit(X)
    with pytest.raises(
        ValueError,
        match="torch_transform differentiates 'saliency' and 'input_x_gradient' "
        "maps; this transformer uses method='deeplift'.",
    ):
        transformer.torch_transform(torch.tensor(X))


def test_normalisation_by_hand():
    attr = torch.tensor([[[[0.0, -2.0], [1.0, 4.0]]]])
    np.testing.assert_allclose(
        normalize_attributions(attr, "max", True).numpy(), [[0, 0.5, 0.25, 1]]
    )
    flat = normalize_attributions(attr, None, True).numpy()
    np.testing.assert_allclose(flat, [[0, -2, 1, 4]])
