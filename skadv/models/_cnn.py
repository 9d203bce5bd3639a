"""Convolutional classifiers for the MNIST and 8x8 digits images."""

from torch import nn


def _as_images(x, shape):
    # scikit-learn pipelines pass 2-D (n_samples, n_features) arrays; restore the
    # (channels, height, width) layout the convolutions need.
    if x.ndim == 2:
        return x.reshape(x.shape[0], *shape)
    return x


class MnistCNN(nn.Module):
    """The MNIST classifier of Ko & Lim (2021).

    One 3x3 convolution with 32 filters and no padding, then a hidden dense
    layer of 128 units: ``Conv2d(1, 32, 3) -> ReLU -> Flatten ->
    Linear(32 * 26 * 26, 128) -> ReLU -> Linear(128, n_classes)``.

    Every nonlinearity is its own :class:`torch.nn.ReLU` module, used once in
    :meth:`forward`, so that captum's guided backpropagation and DeepLift can
    hook them.

    Parameters
    ----------
    n_classes : int, default=10
        Number of classes, i.e. of output logits.

    See Also
    --------
    DigitsCNN : A smaller network for the 8x8 digits.
    skadv.models.make_mnist_classifier : This module in a seeded skorch
        classifier with the paper's training settings.

    References
    ----------
    .. [1] G. Ko and G. Lim, "Unsupervised Detection of Adversarial Examples
       with Model Explanations", AdvML workshop at KDD, 2021.
       https://arxiv.org/abs/2107.10480

    Examples
    --------
    >>> import torch
    >>> from skadv.models import MnistCNN
    >>> module = MnistCNN()
    >>> module(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> module(torch.zeros(2, 784)).shape  # flat input is reshaped
    torch.Size([2, 10])
    """

    #: Shape of one input image, (channels, height, width).
    input_shape = (1, 28, 28)

    def __init__(self, n_classes=10):
        super().__init__()
        self.n_classes = n_classes
        self.conv = nn.Conv2d(1, 32, kernel_size=3)
        self.relu1 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * 26 * 26, 128)
        self.relu2 = nn.ReLU()
        self.fc2 = nn.Linear(128, n_classes)

    def forward(self, x):
        """Return the logits for a batch of images.

        Parameters
        ----------
        x : torch.Tensor of shape (n_samples, 1, 28, 28) or (n_samples, 784)
            Images, flattened or not.

        Returns
        -------
        logits : torch.Tensor of shape (n_samples, n_classes)
            Unnormalised class scores.
        """
        x = _as_images(x, self.input_shape)
        x = self.relu1(self.conv(x))
        x = self.relu2(self.fc1(self.flatten(x)))
        return self.fc2(x)


class DigitsCNN(nn.Module):
    """A small CNN for scikit-learn's 8x8 digits.

    ``Conv2d(1, 16, 3, padding=1) -> ReLU -> Conv2d(16, 32, 3, padding=1) ->
    ReLU -> MaxPool2d(2) -> Flatten -> Linear(32 * 4 * 4, 64) -> ReLU ->
    Linear(64, n_classes)``. It trains in seconds on a CPU, which makes it the
    stand-in for :class:`MnistCNN` in examples and tests.

    Every nonlinearity is its own :class:`torch.nn.ReLU` module, used once in
    :meth:`forward`, so that captum's guided backpropagation and DeepLift can
    hook them.

    Parameters
    ----------
    n_classes : int, default=10
        Number of classes, i.e. of output logits.

    See Also
    --------
    MnistCNN : The MNIST classifier of Ko & Lim (2021).
    skadv.models.make_digits_classifier : This module in a seeded skorch
        classifier.

    Examples
    --------
    >>> import torch
    >>> from skadv.models import DigitsCNN
    >>> module = DigitsCNN()
    >>> module(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    >>> module(torch.zeros(2, 64)).shape  # flat input is reshaped
    torch.Size([2, 10])
    """

    #: Shape of one input image, (channels, height, width).
    input_shape = (1, 8, 8)

    def __init__(self, n_classes=10):
        super().__init__()
        self.n_classes = n_classes
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(64, n_classes)

    def forward(self, x):
        """Return the logits for a batch of images.

        Parameters
        ----------
        x : torch.Tensor of shape (n_samples, 1, 8, 8) or (n_samples, 64)
            Images, flattened or not.

        Returns
        -------
        logits : torch.Tensor of shape (n_samples, n_classes)
            Unnormalised class scores.
        """
        x = _as_images(x, self.input_shape)
        x = self.relu1(self.conv1(x))
        x = self.pool(self.relu2(self.conv2(x)))
        x = self.relu3(self.fc1(self.flatten(x)))
        return self.fc2(x)
