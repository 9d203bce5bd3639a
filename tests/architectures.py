"""Small, untrained classifiers of the kinds engineers bring to skadv.

Each builder takes the shape of one input, ``(C, H, W)`` with H and W
multiples of 4, and returns a module of a few thousand parameters with
random weights drawn from ``seed`` (torch's global generator is left as it
was). Behaviour tests need no training: what matters is the architecture.
"""

import torch
from torch import nn

N_CLASSES = 10


def _seeded(build):
    def builder(input_shape, seed=0):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return build(*input_shape)

    builder.__name__ = build.__name__
    builder.__doc__ = build.__doc__
    return builder


class Standardize(nn.Module):
    """Input normalisation inside the model: (x - mean) / std per channel."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean).reshape(-1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std).reshape(-1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class ResidualBlock(nn.Module):
    """torchvision's BasicBlock without downsampling: one in-place ReLU module
    applied twice, after the second convolution's BatchNorm plus the skip."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class TinyViT(nn.Module):
    """Patch embedding (4x4 patches), class token, learned positions, one
    ``TransformerEncoderLayer`` (batch_first, GELU), layer norm, linear head.

    ``activation=None`` gives the encoder a ``torch.nn.GELU`` module (as timm
    and torchvision do); ``"gelu"`` is torch's own functional GELU.
    """

    def __init__(self, channels, height, width, dim=16, pool="cls", activation=None):
        super().__init__()
        n_patches = (height // 4) * (width // 4)
        self.pool = pool
        self.patch_embedding = nn.Conv2d(channels, dim, kernel_size=4, stride=4)
        self.class_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.positions = nn.Parameter(0.02 * torch.randn(1, n_patches + 1, dim))
        self.encoder = nn.TransformerEncoderLayer(
            dim,
            nhead=2,
            dim_feedforward=2 * dim,
            dropout=0.1,
            activation=nn.GELU() if activation is None else activation,
            batch_first=True,
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, N_CLASSES)

    def forward(self, x):
        tokens = self.patch_embedding(x).flatten(2).transpose(1, 2)
        cls = self.class_token.expand(len(x), -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.positions
        tokens = self.norm(self.encoder(tokens))
        pooled = tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(dim=1)
        return self.head(pooled)


class TupleOutput(nn.Module):
    """Returns ``(logits, features)``, as many feature-extractor heads do."""

    def __init__(self, channels, height, width):
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * height * width, 16), nn.ReLU()
        )
        self.head = nn.Linear(16, N_CLASSES)

    def forward(self, x):
        features = self.features(x)
        return self.head(features), features


class DictOutput(TupleOutput):
    """Returns ``{"logits": ..., "features": ...}``."""

    def forward(self, x):
        logits, features = super().forward(x)
        return {"logits": logits, "features": features}


@_seeded
def bn_dropout_cnn(channels, height, width):
    """Conv, BatchNorm2d, ReLU, max-pool, Dropout, linear head."""
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(8 * (height // 2) * (width // 2), N_CLASSES),
    )


@_seeded
def gelu_cnn(channels, height, width):
    """Two strided convolutions with GELU, linear head."""
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, stride=2, padding=1),
        nn.GELU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.GELU(),
        nn.Flatten(),
        nn.Linear(8 * (height // 4) * (width // 4), N_CLASSES),
    )


@_seeded
def silu_mlp(channels, height, width):
    """Flatten, Linear, SiLU, Linear."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * height * width, 8),
        nn.SiLU(),
        nn.Linear(8, N_CLASSES),
    )


@_seeded
def normalized_cnn(channels, height, width):
    """Per-channel standardisation as the first module, then a ReLU CNN."""
    mean, std = [0.485, 0.456, 0.406][:channels], [0.229, 0.224, 0.225][:channels]
    return nn.Sequential(
        Standardize(mean, std),
        nn.Conv2d(channels, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * (height // 2) * (width // 2), N_CLASSES),
    )


@_seeded
def residual_cnn(channels, height, width):
    """Stem convolution, one residual block, global average pool, linear head."""
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        ResidualBlock(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, N_CLASSES),
    )


@_seeded
def tiny_vit(channels, height, width):
    """A one-layer vision transformer with a class token."""
    return TinyViT(channels, height, width, pool="cls")


@_seeded
def tiny_vit_mean_pool(channels, height, width):
    """A one-layer vision transformer pooled over its patch tokens."""
    return TinyViT(channels, height, width, pool="mean")


@_seeded
def tiny_vit_functional_gelu(channels, height, width):
    """The class-token transformer with torch's string activation="gelu"."""
    return TinyViT(channels, height, width, pool="cls", activation="gelu")


@_seeded
def tuple_output(channels, height, width):
    """Returns (logits, features)."""
    return TupleOutput(channels, height, width)


@_seeded
def dict_output(channels, height, width):
    """Returns {"logits": ..., "features": ...}."""
    return DictOutput(channels, height, width)


# Classifiers whose forward pass returns logits, by name.
ARCHITECTURES = {
    build.__name__: build
    for build in (
        bn_dropout_cnn,
        gelu_cnn,
        silu_mlp,
        normalized_cnn,
        residual_cnn,
        tiny_vit,
        tiny_vit_mean_pool,
    )
}
# Which of them use only smooth activations (no ReLU anywhere).
SMOOTH = frozenset({"gelu_cnn", "silu_mlp", "tiny_vit", "tiny_vit_mean_pool"})
