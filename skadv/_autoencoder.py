"""Autoencoder modules that reconstruct explanation maps, and their skorch nets."""

import torch
from skorch import NeuralNetRegressor
from torch import nn


class MLPAutoencoder(nn.Module):
    """Ko & Lim's reconstructor: one hidden ReLU layer, sigmoid output.

    With the defaults on MNIST maps this is the paper's 784-64-784 network.

    Parameters
    ----------
    n_features : int
        Length of a flattened map. :class:`ExplanationReconstructionDetector`
        sets it from the data when the reconstructor does not.

    hidden : int, default=64
        Width of the bottleneck.

    Examples
    --------
    >>> import torch
    >>> from skadv import MLPAutoencoder
    >>> MLPAutoencoder(784)(torch.rand(2, 784)).shape
    torch.Size([2, 784])
    """

    def __init__(self, n_features, hidden=64):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(hidden, n_features), nn.Sigmoid())

    def forward(self, x):
        """Reconstruct flat maps of shape (n_samples, n_features)."""
        return self.decoder(self.encoder(x))


def image_shape(input_shape):
    """``input_shape`` as ``(C, H, W)``: an ``(H, W)`` shape gets one channel."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise ValueError(
            f"input_shape must be (C, H, W) or (H, W); got {input_shape!r}."
        )
    return shape


class ConvAutoencoder(nn.Module):
    """A small convolutional autoencoder for image-shaped maps.

    Takes and returns flat maps (as the detector passes them) and reshapes
    them to ``input_shape`` inside: two stride-2 convolutions down, two
    transposed convolutions up, sigmoid output.

    Parameters
    ----------
    input_shape : tuple of int
        Shape of one map, ``(C, H, W)`` or ``(H, W)``; e.g. ``(28, 28)`` for
        MNIST saliency maps (normalised maps have one channel).

    channels : tuple of two int, default=(16, 32)
        Channels of the two encoder convolutions.

    Examples
    --------
    >>> import torch
    >>> from skadv import ConvAutoencoder
    >>> ConvAutoencoder((28, 28))(torch.rand(2, 784)).shape
    torch.Size([2, 784])
    """

    def __init__(self, input_shape, channels=(16, 32)):
        super().__init__()
        shape = image_shape(input_shape)
        self.input_shape = shape
        c, c1, c2 = shape[0], int(channels[0]), int(channels[1])
        self.encoder = nn.Sequential(
            nn.Conv2d(c, c1, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c1, c, 4, stride=2, padding=1),
        )

    def forward(self, x):
        """Reconstruct flat maps of shape (n_samples, prod(input_shape))."""
        n = x.shape[0]
        images = x.reshape(n, *self.input_shape)
        out = self.decoder(self.encoder(images))
        if out.shape[-2:] != images.shape[-2:]:
            # Odd sizes do not halve exactly; crop back to the input's size.
            out = out[..., : images.shape[-2], : images.shape[-1]]
        return torch.sigmoid(out).reshape(n, -1)


def make_reconstructor(module=MLPAutoencoder, **params):
    """A skorch ``NeuralNetRegressor`` with Ko & Lim's training settings.

    Adam with learning rate 1e-3, mean squared error, 10 epochs, batch 32, no
    internal validation split, silent. Any skorch parameter overrides them
    (``max_epochs=20``, ``module__hidden=128``, ``device="cuda"``...).

    Parameters
    ----------
    module : type of torch.nn.Module, default=MLPAutoencoder
        The autoencoder class; it maps flat maps to flat reconstructions.

    **params : dict
        Skorch parameters, e.g. ``module__hidden=32`` or ``max_epochs=5``.

    Returns
    -------
    net : skorch.NeuralNetRegressor
        An unfitted net, to pass as ``reconstructor`` to
        :class:`ExplanationReconstructionDetector`.

    Examples
    --------
    >>> from skadv import ConvAutoencoder, make_reconstructor
    >>> net = make_reconstructor(ConvAutoencoder, module__input_shape=(28, 28))
    >>> net.max_epochs, net.batch_size
    (10, 32)
    """
    defaults = {
        "criterion": nn.MSELoss,
        "optimizer": torch.optim.Adam,
        "lr": 1e-3,
        "max_epochs": 10,
        "batch_size": 32,
        "train_split": None,
        "verbose": 0,
        "iterator_train__shuffle": True,
        # Scoring is inference only: large batches cost no accuracy.
        "iterator_valid__batch_size": 1024,
    }
    return NeuralNetRegressor(module, **{**defaults, **params})
