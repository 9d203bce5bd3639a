"""Class-conditional autoencoders: one network reconstructs the maps of every class.

A per-class detector holds one autoencoder per predicted class, so its memory
grows with one full network per class (1,000 classes of 3x224x224 maps and the
default MLP: 1,000 nets of 150,528 inputs). These modules take the class as a
second input instead: a learned embedding of the class scales and shifts the
hidden channels (FiLM, Perez et al. 2018), so a class costs one row of the
embedding table and every class trains the shared weights.
"""

import torch
from torch import nn

from skadv._autoencoder import image_shape, make_reconstructor


class _FiLM(nn.Module):
    """Per-class scale and shift of the hidden channels of several layers.

    One embedding row per class holds every layer's ``(gamma - 1, beta)``.
    With ``std=0`` it starts at zero, so an untrained class is the identity
    (the shared network alone) and each class learns only its departure from
    it; a positive ``std`` starts the classes apart, on random scales and
    shifts.
    """

    def __init__(self, n_classes, widths, std=0.0):
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.embedding = nn.Embedding(int(n_classes), 2 * sum(self.widths))
        nn.init.zeros_(self.embedding.weight)
        if std > 0:
            nn.init.normal_(self.embedding.weight, std=float(std))

    def forward(self, classes):
        """A list of ``(gamma, beta)`` pairs, one per layer, each (n, width)."""
        codes = self.embedding(classes.long()).split(
            [w for width in self.widths for w in (width, width)], dim=1
        )
        return [(1 + codes[2 * i], codes[2 * i + 1]) for i in range(len(self.widths))]


def _modulate(h, film):
    gamma, beta = film
    if h.dim() == 4:  # (n, C, H, W): one scale and shift per channel
        gamma, beta = gamma[:, :, None, None], beta[:, :, None, None]
    return h * gamma + beta


class ConditionalMLPAutoencoder(nn.Module):
    """One MLP autoencoder for every class of flat maps, the class as an input.

    :class:`MLPAutoencoder`'s shape (one hidden ReLU layer, sigmoid output)
    with the hidden units scaled and shifted by a learned embedding of the
    class (FiLM). Pass it through :func:`make_conditional_reconstructor` to
    :class:`ExplanationReconstructionDetector`, which then trains this one
    network on the maps of every class.

    Parameters
    ----------
    n_features : int
        Length of a flattened map; the detector sets it from the data.

    n_classes : int
        Number of classes the embedding holds; the detector sets it (its
        classes, plus one slot for the shared fallback).

    hidden : int, default=64
        Width of the bottleneck.

    embedding_std : float, default=0.0
        Standard deviation of the class embedding's initial values. ``0``
        starts every class as the shared network; a positive value starts the
        classes on random scales and shifts of the hidden units, which keeps
        them further apart after training and so sharpens a class-contrastive
        score (the detector's ``contrast``). See :ref:`many_classes`.

    Examples
    --------
    >>> import torch
    >>> from skadv import ConditionalMLPAutoencoder
    >>> module = ConditionalMLPAutoencoder(784, n_classes=10)
    >>> module(torch.rand(2, 784), torch.tensor([3, 7])).shape
    torch.Size([2, 784])
    """

    #: The detector passes the class of each row as ``forward``'s second input.
    class_conditional = True

    def __init__(self, n_features, n_classes, hidden=64, embedding_std=0.0):
        super().__init__()
        self.encoder = nn.Linear(int(n_features), int(hidden))
        self.film = _FiLM(n_classes, [hidden], std=embedding_std)
        self.decoder = nn.Sequential(
            nn.Linear(int(hidden), int(n_features)), nn.Sigmoid()
        )

    def forward(self, maps, classes):
        """Reconstruct flat maps (n, n_features) of classes (n,) (int indices)."""
        (film,) = self.film(classes)
        return self.decoder(torch.relu(_modulate(self.encoder(maps), film)))


class ConditionalConvAutoencoder(nn.Module):
    """One convolutional autoencoder for every class of image-shaped maps.

    Strided convolutions down (each ``strides[i]`` times smaller), transposed
    convolutions back up, sigmoid output; after every hidden layer the
    channels are scaled and shifted by a learned embedding of the class
    (FiLM). Takes and returns flat maps (as the detector passes them). Its
    size grows with the number of classes by one embedding row of
    ``4 * sum(channels) - 2 * channels[-1]`` numbers per class, and its
    activations shrink with the strides: ``strides=(4, 2, 2)`` turns a
    224x224 map into 14x14 codes.

    Parameters
    ----------
    input_shape : tuple of int
        Shape of one map, ``(C, H, W)`` or ``(H, W)``, e.g. ``(3, 224, 224)``.

    n_classes : int
        Number of classes the embedding holds; the detector sets it.

    channels : tuple of int, default=(16, 32)
        Channels of the encoder's convolutions.

    strides : tuple of int, default=None
        Downsampling factor of each encoder convolution (the decoder mirrors
        them); ``None``: 2 for each.

    embedding_std : float, default=0.0
        Standard deviation of the class embedding's initial values; see
        :class:`ConditionalMLPAutoencoder`.

    Examples
    --------
    >>> import torch
    >>> from skadv import ConditionalConvAutoencoder
    >>> module = ConditionalConvAutoencoder((3, 224, 224), n_classes=1000,
    ...                                     channels=(16, 32, 64), strides=(4, 2, 2))
    >>> module(torch.rand(2, 3 * 224 * 224), torch.tensor([0, 999])).shape
    torch.Size([2, 150528])
    >>> sum(p.numel() for p in module.parameters())  # 1,000 classes in 1.4 MB
    356563
    """

    class_conditional = True

    def __init__(
        self, input_shape, n_classes, channels=(16, 32), strides=None, embedding_std=0.0
    ):
        super().__init__()
        shape = image_shape(input_shape)
        channels = tuple(int(c) for c in channels)
        strides = (
            (2,) * len(channels) if strides is None else tuple(int(s) for s in strides)
        )
        if not channels or len(strides) != len(channels) or min(strides) < 1:
            raise ValueError(
                "strides must hold one positive int per entry of channels; got "
                f"channels={channels!r} and strides={strides!r}."
            )
        self.input_shape = shape
        widths = (shape[0], *channels)
        # A kernel of 2s - 1 (at least 3) with padding s - 1 gives ceil(H / s)
        # rows; a transposed kernel of s with stride s gives s times as many.
        self.encoder = nn.ModuleList(
            nn.Conv2d(a, b, max(3, 2 * s - 1), stride=s, padding=max(3, 2 * s - 1) // 2)
            for a, b, s in zip(widths[:-1], widths[1:], strides, strict=True)
        )
        self.decoder = nn.ModuleList(
            nn.ConvTranspose2d(b, a, 3, padding=1)
            if s == 1
            else nn.ConvTranspose2d(b, a, s, stride=s)
            for a, b, s in reversed(
                list(zip(widths[:-1], widths[1:], strides, strict=True))
            )
        )
        # Every encoder output, then every decoder output but the last.
        self.film = _FiLM(
            n_classes, [*channels, *reversed(channels[:-1])], std=embedding_std
        )

    def forward(self, maps, classes):
        """Reconstruct flat maps (n, prod(input_shape)) of classes (n,)."""
        n = maps.shape[0]
        h = maps.reshape(n, *self.input_shape)
        films = iter(self.film(classes))
        for conv in self.encoder:
            h = torch.relu(_modulate(conv(h), next(films)))
        for i, conv in enumerate(self.decoder):
            h = conv(h)
            if i < len(self.decoder) - 1:
                h = torch.relu(_modulate(h, next(films)))
        # Sizes that do not divide by the strides come back larger: crop.
        h = h[..., : self.input_shape[1], : self.input_shape[2]]
        return torch.sigmoid(h).reshape(n, -1)


def make_conditional_reconstructor(input_shape=None, **params):
    """A skorch net around one class-conditional autoencoder for all classes.

    Pass it as ``reconstructor`` to :class:`ExplanationReconstructionDetector`:
    the detector then trains this single network on the benign maps of every
    class, the class index as a second input, instead of one network per
    class. Training settings are :func:`make_reconstructor`'s (Adam, lr 1e-3,
    MSE, 10 epochs, batch 32), which any skorch parameter overrides.

    Parameters
    ----------
    input_shape : tuple of int, default=None
        Shape of one map, e.g. ``(3, 224, 224)``: a
        :class:`ConditionalConvAutoencoder`. ``None``: a
        :class:`ConditionalMLPAutoencoder` on flat maps.

    **params : dict
        Skorch parameters, e.g. ``module__channels=(16, 32, 64)``,
        ``module__strides=(4, 2, 2)``, ``module__hidden=256`` or
        ``max_epochs=5``.

    Returns
    -------
    net : skorch.NeuralNetRegressor
        An unfitted net.

    See Also
    --------
    make_reconstructor : The per-class autoencoders' net.

    Examples
    --------
    >>> import numpy as np
    >>> from skadv import (ExplanationReconstructionDetector,
    ...                    make_conditional_reconstructor)
    >>> rng = np.random.default_rng(0)
    >>> maps = rng.random((300, 16), dtype=np.float32) * 0.2
    >>> X = np.column_stack([rng.integers(0, 3, 300), maps]).astype(np.float32)
    >>> detector = ExplanationReconstructionDetector(
    ...     reconstructor=make_conditional_reconstructor(max_epochs=5),
    ...     random_state=0).fit(X)
    >>> len(detector.reconstructors_), detector.offset_.shape  # one net, 3 thresholds
    (1, (3,))
    """
    if input_shape is None:
        return make_reconstructor(ConditionalMLPAutoencoder, **params)
    return make_reconstructor(
        ConditionalConvAutoencoder, module__input_shape=tuple(input_shape), **params
    )
