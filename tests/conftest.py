import numpy as np
import pytest
import torch


def pytest_configure(config):
    # The test models are tiny: torch's intra-op threads only add overhead, and
    # when the cores are shared they make training many times slower.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_torch_rng():
    """Tests may seed torch; give every test the same global RNG state back."""
    state = torch.random.get_rng_state()
    yield
    torch.random.set_rng_state(state)


def make_maps(n_per_class=60, n_classes=3, n_features=16, seed=0):
    """Benign-looking maps: each class a fixed pattern plus a little noise.

    Returns rows laid out as ExplanationTransformer writes them (class column
    first) and odd rows whose maps are uniform noise, which no autoencoder of
    the patterns reconstructs well.
    """
    rng = np.random.default_rng(seed)
    patterns = rng.random((n_classes, n_features))
    classes = np.repeat(np.arange(n_classes), n_per_class)
    maps = patterns[classes] + 0.05 * rng.standard_normal((classes.size, n_features))
    benign = np.column_stack([classes, np.clip(maps, 0, 1)]).astype(np.float32)
    odd_classes = np.tile(np.arange(n_classes), 10)
    odd = np.column_stack([odd_classes, rng.random((odd_classes.size, n_features))])
    return benign, odd.astype(np.float32)


@pytest.fixture(scope="session")
def maps():
    return make_maps()


@pytest.fixture(scope="session")
def digits_fgsm():
    """The digits classifier on a stratified 70% of the digits, the other 30%,
    and FGSM (eps 0.2) examples of them that change the prediction: the data
    of the views' and the model-aware detectors' detection tests."""
    from sklearn.model_selection import train_test_split
    from sklearn.utils import Bunch

    from skadv.attacks import make_adversarial
    from skadv.datasets import load_digits
    from skadv.models import make_digits_classifier

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, train_size=0.7, stratify=y, random_state=0
    )
    net = make_digits_classifier(random_state=0).fit(X_train, y_train)
    X_adv, success = make_adversarial(
        net, X_test, y_test, attack="fgsm", eps=0.2, random_state=0
    )
    return Bunch(net=net, X_train=X_train, X_test=X_test, X_adv=X_adv[success])
