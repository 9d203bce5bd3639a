import pickle

import numpy as np
import pytest
import torch
from captum.attr import DeepLift, GuidedBackprop, Saliency
from sklearn.base import clone
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from skorch import NeuralNetClassifier

from skadv.datasets import load_digits
from skadv.models import (
    DigitsCNN,
    MnistCNN,
    make_classifier,
    make_digits_classifier,
    make_mnist_classifier,
)

# captum announces, as a UserWarning, the hooks it sets on the ReLU modules.
ignore_captum_hooks = pytest.mark.filterwarnings("ignore:Setting .*hooks:UserWarning")


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    # These networks are too small to gain from intra-op parallelism, and on a
    # loaded 2-core machine torch's thread pool makes each training step up to
    # 40 times slower (measured); restored after the module.
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


@pytest.fixture(scope="module")
def digits_split():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)


@pytest.fixture(scope="module")
def digits_net(digits_split):
    X_train, _, y_train, _ = digits_split
    return make_digits_classifier(random_state=0).fit(X_train, y_train)


def _weights(net):
    return {k: v.clone() for k, v in net.module_.state_dict().items()}


def _assert_same_weights(net1, net2):
    w1, w2 = _weights(net1), _weights(net2)
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=0, atol=0)


def _small_digits(n_samples=300):
    X, y = load_digits(return_X_y=True)
    return X[:n_samples], y[:n_samples]


# Modules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "module_class, image_shape",
    [(MnistCNN, (1, 28, 28)), (DigitsCNN, (1, 8, 8))],
)
@pytest.mark.parametrize("n_classes", [10, 3])
def test_module_forward_images_and_flat(module_class, image_shape, n_classes):
    module = module_class(n_classes=n_classes).eval()
    x = torch.rand(4, *image_shape, generator=torch.Generator().manual_seed(0))

    logits = module(x)
    flat_logits = module(x.reshape(4, -1))

    assert logits.shape == (4, n_classes)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(flat_logits, logits)


def test_mnist_cnn_architecture():
    # Ko & Lim's classifier, layer for layer.
    module = MnistCNN()
    layers = list(module.children())
    assert [type(layer) for layer in layers] == [
        torch.nn.Conv2d,
        torch.nn.ReLU,
        torch.nn.Flatten,
        torch.nn.Linear,
        torch.nn.ReLU,
        torch.nn.Linear,
    ]
    conv, fc1, fc2 = module.conv, module.fc1, module.fc2
    assert (conv.in_channels, conv.out_channels) == (1, 32)
    assert conv.kernel_size == (3, 3)
    assert conv.padding == (0, 0)
    assert (fc1.in_features, fc1.out_features) == (32 * 26 * 26, 128)
    assert (fc2.in_features, fc2.out_features) == (128, 10)


@pytest.mark.parametrize("module_class", [MnistCNN, DigitsCNN])
def test_module_relus_are_distinct_modules(module_class):
    # captum hooks ReLU modules; each must be its own module, used once.
    module = module_class()
    relus = [m for m in module.modules() if isinstance(m, torch.nn.ReLU)]
    calls = []
    handles = [
        relu.register_forward_hook(lambda m, i, o: calls.append(id(m)))
        for relu in relus
    ]
    try:
        module(torch.zeros((1, *module.input_shape)))
    finally:
        for handle in handles:
            handle.remove()

    assert len(relus) >= 2
    assert sorted(calls) == sorted(id(relu) for relu in relus)


@ignore_captum_hooks
@pytest.mark.parametrize("module_class", [MnistCNN, DigitsCNN])
def test_module_works_with_captum(module_class):
    module = module_class().eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((3, *module.input_shape), generator=generator, requires_grad=True)

    gradient = Saliency(module).attribute(x, target=1, abs=False)
    guided = GuidedBackprop(module).attribute(x, target=1)
    deeplift = DeepLift(module).attribute(x, target=1)

    assert guided.shape == deeplift.shape == x.shape
    # The hooks on the ReLU modules took effect: guided backpropagation is not
    # the plain gradient.
    assert not torch.allclose(guided, gradient)


# Training ---------------------------------------------------------------------


def test_digits_classifier_accuracy(digits_split, digits_net):
    _, X_test, _, y_test = digits_split
    # Measured: 0.978 with random_state=0 (0.976-0.980 over random_state 0-4),
    # after about 2 s of training on one CPU thread.
    assert digits_net.score(X_test, y_test) >= 0.95
    np.testing.assert_array_equal(digits_net.classes_, np.arange(10))


def test_classifier_predicts_flat_input(digits_split, digits_net):
    # Flat (n_samples, 64) arrays, as scikit-learn pipelines pass them.
    _, X_test, _, _ = digits_split
    X_flat = X_test.reshape(len(X_test), -1)
    np.testing.assert_array_equal(
        digits_net.predict(X_flat), digits_net.predict(X_test)
    )
    np.testing.assert_allclose(
        digits_net.predict_proba(X_flat), digits_net.predict_proba(X_test), rtol=1e-6
    )


def test_classifier_in_pipeline():
    X, y = _small_digits()
    flatten = FunctionTransformer(lambda X: X.reshape(len(X), -1))
    pipe = make_pipeline(
        flatten, make_digits_classifier(max_epochs=2, random_state=0)
    ).fit(X, y)
    assert pipe.predict(X).shape == (len(X),)


def test_mnist_classifier_fits_mnist_shaped_data():
    rng = np.random.RandomState(0)
    X = rng.uniform(size=(64, 1, 28, 28)).astype(np.float32)
    y = np.arange(64) % 10
    net = make_mnist_classifier(max_epochs=1, random_state=0).fit(X, y)

    assert isinstance(net.module_, MnistCNN)
    assert net.predict(X).shape == (64,)
    assert net.predict_proba(X).shape == (64, 10)
    np.testing.assert_allclose(net.predict_proba(X).sum(axis=1), 1, rtol=1e-5)


# Seeding ----------------------------------------------------------------------


def test_same_random_state_same_weights_and_predictions():
    X, y = _small_digits()
    net1 = make_digits_classifier(max_epochs=2, random_state=42).fit(X, y)
    net2 = make_digits_classifier(max_epochs=2, random_state=42).fit(X, y)
    net3 = make_digits_classifier(max_epochs=2, random_state=43).fit(X, y)

    _assert_same_weights(net1, net2)
    np.testing.assert_array_equal(net1.predict_proba(X), net2.predict_proba(X))
    assert not torch.equal(net1.module_.fc2.weight, net3.module_.fc2.weight)


def test_shuffling_is_seeded():
    # Same initial weights (warm start from a copy) but different seeds while
    # training: only the order of the mini-batches differs, and it must show.
    X, y = _small_digits()
    base = make_digits_classifier(max_epochs=1, random_state=0).initialize()
    nets = []
    for random_state in (1, 1, 2):
        net = pickle.loads(pickle.dumps(base))
        net.set_params(random_state=random_state, warm_start=True)
        nets.append(net.partial_fit(X, y))
    _assert_same_weights(nets[0], nets[1])
    assert not torch.equal(nets[0].module_.fc2.weight, nets[2].module_.fc2.weight)


@pytest.mark.parametrize("method", ["fit", "partial_fit", "initialize"])
def test_global_torch_rng_untouched(method):
    X, y = _small_digits(100)
    net = make_digits_classifier(max_epochs=1, random_state=0)
    with torch.random.fork_rng():
        state = torch.random.get_rng_state()
        if method == "initialize":
            net.initialize()
        else:
            getattr(net, method)(X, y)
        torch.testing.assert_close(torch.random.get_rng_state(), state, rtol=0, atol=0)


def test_random_state_none_uses_global_rng():
    # Without a random_state the net behaves like skorch's: it draws from (and
    # advances) torch's global generator.
    X, y = _small_digits(100)
    nets = []
    with torch.random.fork_rng():
        for _ in range(2):
            torch.manual_seed(0)
            state = torch.random.get_rng_state()
            nets.append(make_digits_classifier(max_epochs=1).fit(X, y))
            assert not torch.equal(torch.random.get_rng_state(), state)
    _assert_same_weights(*nets)


def test_random_state_instance():
    # A RandomState instance draws a seed per fit: reproducible from a fresh
    # instance, different on the next fit.
    X, y = _small_digits(100)
    nets = []
    for _ in range(2):
        rng = np.random.RandomState(0)
        net = make_digits_classifier(max_epochs=1, random_state=rng)
        nets.append(net.fit(X, y))
    _assert_same_weights(*nets)
    first = nets[0].module_.fc2.weight.clone()
    nets[0].fit(X, y)
    assert not torch.equal(nets[0].module_.fc2.weight, first)


def test_partial_fit_from_scratch_matches_fit():
    # fit seeds initialisation and training as one stream; so does a first
    # partial_fit.
    X, y = _small_digits(100)
    net_fit = make_digits_classifier(max_epochs=1, random_state=0).fit(X, y)
    net_partial = make_digits_classifier(max_epochs=1, random_state=0).partial_fit(X, y)
    _assert_same_weights(net_fit, net_partial)


def test_refit_is_reproducible():
    X, y = _small_digits(100)
    net = make_digits_classifier(max_epochs=1, random_state=0).fit(X, y)
    first = _weights(net)
    net.fit(X, y)
    for key, value in _weights(net).items():
        torch.testing.assert_close(value, first[key], rtol=0, atol=0)


# Parameters -------------------------------------------------------------------


def test_make_classifier_defaults():
    net = make_classifier(DigitsCNN)
    assert isinstance(net, NeuralNetClassifier)
    assert net.module is DigitsCNN
    assert net.criterion is torch.nn.CrossEntropyLoss
    assert net.optimizer is torch.optim.Adam
    assert net.lr == 1e-3
    assert net.max_epochs == 10
    assert net.batch_size == 32
    assert net.train_split is None
    assert net.verbose == 0
    assert net.iterator_train__shuffle is True
    assert net.random_state is None


def test_make_classifier_overrides():
    net = make_classifier(
        DigitsCNN, random_state=3, max_epochs=3, lr=0.01, module__n_classes=4
    )
    assert (net.random_state, net.max_epochs, net.lr) == (3, 3, 0.01)
    X, y = _small_digits(100)
    net.fit(X, y % 4)
    assert net.module_.fc2.out_features == 4
    assert net.predict_proba(X).shape == (100, 4)


def test_factories_defaults():
    mnist = make_mnist_classifier()
    assert mnist.module is MnistCNN
    assert (mnist.max_epochs, mnist.batch_size, mnist.lr) == (10, 32, 1e-3)
    assert mnist.optimizer is torch.optim.Adam

    digits = make_digits_classifier(random_state=7, batch_size=64)
    assert digits.module is DigitsCNN
    assert (digits.max_epochs, digits.batch_size, digits.lr) == (20, 64, 1e-3)
    assert digits.random_state == 7


def test_get_params_and_clone():
    net = make_digits_classifier(random_state=5, max_epochs=1)
    params = net.get_params()
    assert params["random_state"] == 5
    # Fitting adds no parameter.
    X, y = _small_digits(100)
    net.fit(X, y)
    assert net.get_params().keys() == params.keys()

    cloned = clone(net)
    assert cloned.random_state == 5
    assert not cloned.initialized_
    _assert_same_weights(cloned.fit(X, y), net)

    net.set_params(random_state=6)
    assert net.random_state == 6


def test_pickle_round_trip(digits_split, digits_net):
    _, X_test, _, _ = digits_split
    restored = pickle.loads(pickle.dumps(digits_net))
    assert restored.random_state == 0
    np.testing.assert_array_equal(restored.predict(X_test), digits_net.predict(X_test))
