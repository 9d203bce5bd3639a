import re

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError
from skorch import NeuralNetClassifier

from skadv import ExplanationTransformer
from skadv._explain import METHODS


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(2, 4, 3), torch.nn.ReLU(), torch.nn.Flatten()
        )
        self.head = torch.nn.Sequential(
            torch.nn.Dropout(0.2), torch.nn.Linear(4 * 6 * 6, 5)
        )

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture
def model():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return SmallCNN()


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).random((40, 2, 8, 8), dtype=np.float32)


def reference_saliency(model, X):
    """Ko & Lim's map by hand: |d logit_pred / dx|, PAIR's percentile scaling."""
    x = torch.tensor(X, requires_grad=True)
    model.eval()
    logits = model(x)
    predicted = logits.argmax(1)
    logits.gather(1, predicted[:, None]).sum().backward()
    grad = x.grad.numpy().astype(np.float64)
    image = np.abs(grad).sum(axis=1).reshape(len(X), -1)  # VisualizeImageGrayscale
    vmin = image.min(axis=1, keepdims=True)
    vmax = np.percentile(image, 99, axis=1, keepdims=True)
    return predicted.numpy(), np.clip((image - vmin) / (vmax - vmin), 0, 1)


def test_saliency_percentile_matches_the_paper(model, X):
    predicted, maps = reference_saliency(model, X)
    model.train()
    Xt = ExplanationTransformer(model).fit_transform(X)
    assert Xt.shape == (40, 1 + 64) and Xt.dtype == np.float32
    np.testing.assert_array_equal(Xt[:, 0], predicted)
    np.testing.assert_allclose(Xt[:, 1:], maps, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_normalised_maps_of_the_predicted_class(model, X, method):
    Xt = ExplanationTransformer(model, method=method).fit_transform(X)
    with torch.no_grad():
        predicted = model.eval()(torch.tensor(X)).argmax(1).numpy()
    np.testing.assert_array_equal(Xt[:, 0], predicted)
    maps = Xt[:, 1:]
    assert maps.shape == (40, 64) and maps.min() >= 0 and maps.max() <= 1
    assert np.isclose(maps.max(axis=1), 1).all()  # each map spans [0, 1]


def test_normalize_none_is_the_raw_signed_attribution(model, X):
    from captum.attr import Saliency

    t = ExplanationTransformer(model, normalize=None).fit(X)
    Xt = t.transform(X)
    assert Xt.shape == (40, 1 + 2 * 64)
    model.eval()
    raw = Saliency(model).attribute(
        torch.tensor(X, requires_grad=True),
        target=torch.tensor(Xt[:, 0].astype(int)),
        abs=False,
    )
    np.testing.assert_allclose(Xt[:, 1:], raw.reshape(40, -1).numpy(), atol=1e-6)
    assert (Xt[:, 1:] < 0).any()


def test_normalize_max(model, X):
    Xt = ExplanationTransformer(model, normalize="max").fit_transform(X)
    _, _ = reference_saliency(model, X)
    x = torch.tensor(X, requires_grad=True)
    logits = model(x)
    logits.gather(1, logits.argmax(1)[:, None]).sum().backward()
    image = x.grad.abs().sum(1).reshape(40, -1).numpy()
    np.testing.assert_allclose(
        Xt[:, 1:], image / image.max(1, keepdims=True), atol=1e-6
    )


def test_method_params_pass_through(model, X):
    few = ExplanationTransformer(
        model, method="integrated_gradients", method_params={"n_steps": 4}
    ).fit_transform(X)
    many = ExplanationTransformer(
        model, method="integrated_gradients", method_params={"n_steps": 64}
    ).fit_transform(X)
    assert not np.allclose(few, many)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        ExplanationTransformer(model, method_params={"bogus": 1}).fit_transform(X)


def test_model_is_not_trained_or_mutated(model, X):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    model.head[0].eval()  # mixed modes must come back as they were
    modes = [m.training for m in model.modules()]
    for method in METHODS:
        ExplanationTransformer(model, method=method).fit_transform(X)
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(p.grad is None for p in model.parameters())
    assert not model._forward_hooks and not model.features[1]._backward_hooks


def test_dropout_is_off_while_explaining(model, X):
    model.train()
    t = ExplanationTransformer(model).fit(X)
    np.testing.assert_array_equal(t.transform(X), t.transform(X))


def test_input_is_not_modified_and_may_be_read_only(model, X):
    X_ro = X.copy()
    X_ro.setflags(write=False)
    Xt = ExplanationTransformer(model).fit_transform(X_ro)
    np.testing.assert_array_equal(X_ro, X)
    np.testing.assert_array_equal(Xt, ExplanationTransformer(model).fit_transform(X))


def test_batch_size_does_not_change_the_maps(model, X):
    big = ExplanationTransformer(model, batch_size=256).fit_transform(X)
    small = ExplanationTransformer(model, batch_size=7).fit_transform(X)
    np.testing.assert_allclose(big, small, atol=1e-6)


def test_flat_input_with_input_shape(model, X):
    flat = X.reshape(40, -1)
    t = ExplanationTransformer(model, input_shape=(2, 8, 8)).fit(flat)
    assert t.input_shape_ == (2, 8, 8) and t.n_features_in_ == 128
    np.testing.assert_array_equal(
        t.transform(flat), ExplanationTransformer(model).fit_transform(X)
    )
    # an image-shaped X is accepted by a transformer fitted on flat rows
    np.testing.assert_array_equal(t.transform(X), t.transform(flat))


def test_cloning_shares_the_model(model):
    t = ExplanationTransformer(model, method="deeplift").set_output(transform="pandas")
    cloned = clone(t)
    assert cloned.model is model and cloned.method == "deeplift"
    assert cloned._sklearn_output_config == {"transform": "pandas"}


def test_pandas_output_and_feature_names(model, X):
    pd = pytest.importorskip("pandas")
    t = ExplanationTransformer(model).set_output(transform="pandas").fit(X)
    out = t.transform(X)
    assert isinstance(out, pd.DataFrame) and out.shape == (40, 65)
    assert list(out.columns[:3]) == ["predicted_class", "explanation0", "explanation1"]
    assert list(t.get_feature_names_out()) == list(out.columns)


def test_fitted_skorch_classifier_is_accepted(X):
    y = np.arange(40) % 5
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = NeuralNetClassifier(
            SmallCNN,
            criterion=torch.nn.CrossEntropyLoss,
            max_epochs=2,
            train_split=None,
            verbose=0,
        ).fit(X, y)
    Xt = ExplanationTransformer(net).fit_transform(X)
    np.testing.assert_array_equal(Xt[:, 0], net.predict(X))
    with pytest.raises(NotFittedError, match="skorch net passed as model is not"):
        ExplanationTransformer(NeuralNetClassifier(SmallCNN)).fit(X)


def drop_class_column(Z):
    return Z[:, 1:]


FORWARD_CALLS = []


def count_forward(module, inputs, output):
    # Module-level, so the model (hashed by the cache) hashes alike every call.
    FORWARD_CALLS.append(1)


def test_pipeline_memory_caches_explanations(model, X, tmp_path):
    from sklearn.preprocessing import FunctionTransformer

    calls = FORWARD_CALLS
    calls.clear()
    model.register_forward_hook(count_forward)
    pipe = make_pipeline(
        ExplanationTransformer(model),
        FunctionTransformer(drop_class_column),
        memory=str(tmp_path),
    )
    clone(pipe).fit(X)
    first = len(calls)
    clone(pipe).fit(X)  # GridSearchCV refits clones: the cache must hit
    assert first > 0 and len(calls) == first


def test_model_must_be_a_module_or_skorch_net(X):
    msg = (
        "model must be a torch.nn.Module returning logits or a fitted skorch "
        "NeuralNetClassifier; got str."
    )
    with pytest.raises(TypeError, match=re.escape(msg)):
        ExplanationTransformer("resnet").fit(X)


def test_bad_parameters(model, X):
    with pytest.raises(InvalidParameterError, match="The 'method' parameter"):
        ExplanationTransformer(model, method="lime").fit(X)
    with pytest.raises(InvalidParameterError, match="The 'batch_size' parameter"):
        ExplanationTransformer(model, batch_size=0).fit(X)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available on this machine"):
            ExplanationTransformer(model, device="cuda").fit(X)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_are_refused(model, X, bad):
    X_bad = X.copy()
    X_bad[1, 0, 2, 3] = bad
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        ExplanationTransformer(model).fit(X_bad)
    t = ExplanationTransformer(model).fit(X)
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        t.transform(X_bad)


def test_wrong_shapes(model, X):
    with pytest.raises(ValueError, match=r"model failed on inputs of shape \(128,\)"):
        ExplanationTransformer(model).fit(X.reshape(40, -1))
    with pytest.raises(ValueError, match=r"input_shape=\(3, 8, 8\) holds 192 values"):
        ExplanationTransformer(model, input_shape=(3, 8, 8)).fit(X)
    t = ExplanationTransformer(model).fit(X)
    with pytest.raises(ValueError, match=r"X has inputs of shape \(2, 4, 16\), but"):
        t.transform(X.reshape(40, 2, 4, 16))
    with pytest.raises(ValueError, match="X has 64 features, but"):
        t.transform(X[:, :1].reshape(40, -1))


def test_use_before_fit(model, X):
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        ExplanationTransformer(model).transform(X)


def test_model_parameters_are_not_exposed(X):
    net = NeuralNetClassifier(SmallCNN, max_epochs=1, train_split=None)
    t = ExplanationTransformer(net)
    assert not any(k.startswith("model__") for k in t.get_params(deep=True))
    with pytest.raises(ValueError, match="Invalid parameter 'model__lr': Explanat"):
        clone(t).set_params(model__lr=0.5)
    assert net.lr == 0.01


def test_concurrent_transforms_share_the_model_safely(model, X):
    from concurrent.futures import ThreadPoolExecutor

    model.train()
    t = ExplanationTransformer(model, method="guided_backprop", batch_size=4).fit(X)
    expected = t.transform(X)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(t.transform, [X] * 8))
    for result in results:
        np.testing.assert_array_equal(result, expected)
    assert model.training


def test_half_precision_model(model, X):
    Xt = ExplanationTransformer(model.half()).fit_transform(X)
    assert Xt.dtype == np.float32 and np.isfinite(Xt).all()


def test_sparse_maps_keep_their_pixels():
    from skadv._scoring import normalize_attributions

    attr = torch.zeros(1, 1, 28, 28)
    attr[0, 0, 3, 4], attr[0, 0, 10, 10] = 2.0, 1.0  # 99th percentile is 0
    maps = normalize_attributions(attr, "percentile", channels_first=True)
    assert torch.count_nonzero(maps) == 2 and maps.max() == 1.0
    constant = normalize_attributions(torch.ones(1, 1, 4, 4), "percentile", True)
    assert torch.count_nonzero(constant) == 0


def test_cuda_models_are_pickled_to_load_on_a_cpu(model, X, monkeypatch):
    # No GPU here: pretend the model is on CUDA and check the torch.save path
    # that maps it to the CPU on load.
    import pickle

    import skadv._frozen_model as frozen_model

    t = ExplanationTransformer(model).fit(X)
    monkeypatch.setattr(frozen_model, "on_cuda", lambda module: True)
    blob = pickle.dumps(t)
    with pytest.warns(UserWarning, match="model was loaded on the CPU"):
        loaded = pickle.loads(blob)
    assert loaded.device_ == torch.device("cpu")
    assert loaded.model is loaded.module_
    np.testing.assert_array_equal(loaded.transform(X), t.transform(X))


def test_memory_caches_transform_on_the_model_weights(model, X, tmp_path):
    calls = FORWARD_CALLS
    calls.clear()
    handle = model.register_forward_hook(count_forward)
    t = ExplanationTransformer(model, memory=str(tmp_path)).fit(X)
    calls.clear()
    first = t.transform(X)
    assert len(calls) > 0
    again = clone(t).fit(X)
    calls.clear()
    np.testing.assert_array_equal(again.transform(X), first)
    assert len(calls) == 0  # a hit: no forward pass
    with torch.no_grad():
        model.head[1].bias += 1.0  # other weights: another key
    t.transform(X)
    assert len(calls) > 0
    handle.remove()


@pytest.mark.parametrize("method", ["guided_backprop", "deeplift"])
def test_methods_warn_when_their_rules_miss_the_models_activations(method, X):
    gelu = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(128, 16),
        torch.nn.GELU(),
        torch.nn.Linear(16, 3),
    )
    with pytest.warns(
        UserWarning,
        match=f"method='{method}' has no rule for the model's GELU activations: "
        "captum passes plain gradients through them",
    ):
        ExplanationTransformer(gelu, method=method).fit(X)

    class FunctionalReLU(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(128, 3)

        def forward(self, x):
            return self.fc(torch.relu(x.flatten(1)))

    with pytest.warns(UserWarning, match="and the model has none"):
        ExplanationTransformer(FunctionalReLU(), method=method).fit(X)


def test_a_single_image_is_told_to_add_a_batch_axis(model, X):
    transformer = ExplanationTransformer(model).fit(X)
    with pytest.raises(
        ValueError,
        match=r"^X has shape \(2, 8, 8\), the shape of one input: add a batch axis, "
        r"X\[None\]\.$",
    ):
        transformer.transform(X[0])
    assert transformer.transform(X[0][None]).shape[0] == 1
