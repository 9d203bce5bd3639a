"""Seeded skorch classifiers for the torch modules."""

import contextlib
import contextvars

import torch
from skorch import NeuralNetClassifier

from skadv._torch_utils import seed_from_random_state, torch_seed
from skadv.models._cnn import DigitsCNN, MnistCNN

# ids of the nets inside a seeded call, kept out of the instances so that no
# flag can leak into get_params(), a pickle taken mid-fit, or another thread.
_SEEDING_NETS = contextvars.ContextVar("skadv_seeding_nets", default=frozenset())


class SeededNeuralNetClassifier(NeuralNetClassifier):
    """A :class:`skorch.NeuralNetClassifier` with a ``random_state``.

    When ``random_state`` is not None, :meth:`initialize`, :meth:`fit` and
    :meth:`partial_fit` run with torch seeded from it, so the weights'
    initialisation, the data loader's shuffling and any dropout are
    reproducible. Torch's global random generator is saved before and restored
    after, as scikit-learn estimators must not reseed it as a side effect.

    Parameters
    ----------
    module : torch.nn.Module class or instance
        The network; it must return logits when ``criterion`` is
        :class:`torch.nn.CrossEntropyLoss`.

    *args
        Passed on to :class:`skorch.NeuralNetClassifier`.

    random_state : int, RandomState instance or None, default=None
        Seeds torch while fitting. An int gives the same weights on every fit
        of the same data; a RandomState instance draws a new seed on every
        call; None leaves torch's global generator alone (skorch's behaviour).

    **kwargs
        Passed on to :class:`skorch.NeuralNetClassifier` (``criterion``,
        ``lr``, ``max_epochs``, ``module__n_classes``, ...).

    See Also
    --------
    make_classifier : Build one with sensible defaults.

    Notes
    -----
    skorch feeds the arrays to the module as they are: ``X`` must be float32
    and ``y`` int64 (as returned by :mod:`skadv.datasets`).

    Examples
    --------
    >>> import torch
    >>> from skadv.datasets import load_digits
    >>> from skadv.models import DigitsCNN
    >>> from skadv.models import SeededNeuralNetClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> net = SeededNeuralNetClassifier(
    ...     DigitsCNN, criterion=torch.nn.CrossEntropyLoss, max_epochs=1,
    ...     train_split=None, verbose=0, random_state=0,
    ... ).fit(X[:64], y[:64])
    >>> net.predict(X[:3]).shape
    (3,)
    """

    def __init__(self, module, *args, random_state=None, **kwargs):
        super().__init__(module, *args, **kwargs)
        self.random_state = random_state

    @contextlib.contextmanager
    def _seeded(self):
        # fit() calls initialize() and partial_fit(), which are seeded too when
        # called directly: only the outermost call seeds, so that initialisation
        # and shuffling draw from one stream instead of restarting it.
        seeding = _SEEDING_NETS.get()
        if id(self) in seeding:
            yield
            return
        token = _SEEDING_NETS.set(seeding | {id(self)})
        try:
            with torch_seed(seed_from_random_state(self.random_state)):
                yield
        finally:
            _SEEDING_NETS.reset(token)

    def initialize(self):
        """Initialize the module, criterion, optimizer and callbacks.

        Seeded from ``random_state`` when it is not None.

        Returns
        -------
        self : object
            The initialized net.
        """
        with self._seeded():
            return super().initialize()

    def fit(self, X, y, **fit_params):
        """Initialize and train the module.

        Seeded from ``random_state`` when it is not None. The module is
        re-initialized unless ``warm_start`` is True.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), dtype float32
            Training inputs.

        y : array-like of shape (n_samples,), dtype int64
            Class labels.

        **fit_params : dict
            Passed on to :meth:`skorch.NeuralNetClassifier.fit`.

        Returns
        -------
        self : object
            The fitted net.
        """
        with self._seeded():
            return super().fit(X, y, **fit_params)

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Train the module further, initializing it first if needed.

        Seeded from ``random_state`` when it is not None.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), dtype float32
            Training inputs.

        y : array-like of shape (n_samples,), dtype int64, default=None
            Class labels.

        classes : array-like of shape (n_classes,), default=None
            Unused, for scikit-learn compatibility.

        **fit_params : dict
            Passed on to :meth:`skorch.NeuralNetClassifier.partial_fit`.

        Returns
        -------
        self : object
            The fitted net.
        """
        with self._seeded():
            return super().partial_fit(X, y, classes=classes, **fit_params)


def make_classifier(module, *, random_state=None, **params):
    """Wrap a torch module returning logits in a seeded skorch classifier.

    The defaults suit a module that returns logits: cross-entropy loss, Adam
    with a learning rate of 1e-3, 10 epochs of shuffled mini-batches of 32, no
    internal validation split and no printing. Any skorch parameter given in
    ``params`` overrides them.

    Parameters
    ----------
    module : torch.nn.Module class or instance
        The network. Pass the class to set its constructor arguments with
        ``module__<name>`` parameters.

    random_state : int, RandomState instance or None, default=None
        Seeds torch while fitting (weights initialisation and shuffling),
        without touching torch's global generator. None leaves torch unseeded.

    **params : dict
        Skorch parameters overriding the defaults, e.g. ``max_epochs=3``,
        ``module__n_classes=10``, ``device="cuda"``.

    Returns
    -------
    net : skorch.NeuralNetClassifier
        An unfitted classifier with a ``random_state`` parameter. Fit it on
        float32 inputs and int64 labels.

    See Also
    --------
    make_mnist_classifier : :class:`~skadv.models.MnistCNN` with the settings
        of Ko & Lim (2021).
    make_digits_classifier : :class:`~skadv.models.DigitsCNN`, tuned for the
        8x8 digits.

    Examples
    --------
    >>> from skadv.datasets import load_digits
    >>> from skadv.models import DigitsCNN, make_classifier
    >>> X, y = load_digits(return_X_y=True)
    >>> net = make_classifier(DigitsCNN, max_epochs=1, random_state=0)
    >>> net.fit(X[:64], y[:64]).predict(X[:5]).shape
    (5,)
    """
    defaults = {
        # The modules return logits; skorch's default NLLLoss expects
        # log-probabilities.
        "criterion": torch.nn.CrossEntropyLoss,
        "optimizer": torch.optim.Adam,
        "lr": 1e-3,
        "max_epochs": 10,
        "batch_size": 32,
        # Held-out data is the caller's business; skorch's default would
        # silently train on 80% of it.
        "train_split": None,
        "verbose": 0,
        "iterator_train__shuffle": True,
    }
    return SeededNeuralNetClassifier(
        module, random_state=random_state, **{**defaults, **params}
    )


def make_mnist_classifier(*, random_state=None, **params):
    """The MNIST classifier of Ko & Lim (2021), ready to fit.

    :class:`~skadv.models.MnistCNN` trained as in the paper: Adam (learning
    rate 1e-3), 10 epochs, mini-batches of 32, cross-entropy loss.

    Parameters
    ----------
    random_state : int, RandomState instance or None, default=None
        Seeds torch while fitting, without touching its global generator.

    **params : dict
        Skorch parameters overriding the defaults (see
        :func:`make_classifier`).

    Returns
    -------
    net : skorch.NeuralNetClassifier
        An unfitted classifier for inputs of shape (n_samples, 1, 28, 28) or
        (n_samples, 784), float32 in [0, 1].

    See Also
    --------
    skadv.datasets.load_mnist : The data it is meant for.

    Examples
    --------
    >>> from skadv.models import make_mnist_classifier
    >>> net = make_mnist_classifier(random_state=0)
    >>> net.max_epochs, net.batch_size
    (10, 32)
    """
    params = {"max_epochs": 10, "batch_size": 32, "lr": 1e-3, **params}
    return make_classifier(MnistCNN, random_state=random_state, **params)


def make_digits_classifier(*, random_state=None, **params):
    """A small CNN for the 8x8 digits, ready to fit.

    :class:`~skadv.models.DigitsCNN` trained with Adam (learning rate 1e-3)
    for 20 epochs of mini-batches of 32. On a stratified 70/30 split of
    :func:`skadv.datasets.load_digits` it reaches about 98% test accuracy in a
    few seconds on a CPU.

    Parameters
    ----------
    random_state : int, RandomState instance or None, default=None
        Seeds torch while fitting, without touching its global generator.

    **params : dict
        Skorch parameters overriding the defaults (see
        :func:`make_classifier`).

    Returns
    -------
    net : skorch.NeuralNetClassifier
        An unfitted classifier for inputs of shape (n_samples, 1, 8, 8) or
        (n_samples, 64), float32 in [0, 1].

    See Also
    --------
    skadv.datasets.load_digits : The data it is meant for.

    Examples
    --------
    >>> from skadv.datasets import load_digits
    >>> from skadv.models import make_digits_classifier
    >>> X, y = load_digits(return_X_y=True)
    >>> net = make_digits_classifier(max_epochs=1, random_state=0)
    >>> net.fit(X[:64], y[:64]).predict_proba(X[:5]).shape
    (5, 10)
    """
    params = {"max_epochs": 20, "batch_size": 32, "lr": 1e-3, **params}
    return make_classifier(DigitsCNN, random_state=random_state, **params)
