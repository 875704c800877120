"""Small models for MNIST-1D (shapes as in the mnist1d reference code)."""

from __future__ import annotations

from torch import Tensor, nn


class CNN1D(nn.Module):
    """Three stride-2 1-D convolutions with ReLU (``channels`` each) and a linear classifier."""

    def __init__(
        self, in_channels: int = 1, length: int = 40, num_classes: int = 10, channels: int = 25
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(in_channels, channels, 5, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        out = (length + 2 - 5) // 2 + 1
        out = (out + 2 - 3) // 2 + 1
        out = (out + 2 - 3) // 2 + 1
        self.classifier = nn.Linear(channels * out, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class MLP(nn.Module):
    """Two hidden ReLU layers of width ``hidden`` on the flattened input."""

    def __init__(
        self, in_channels: int = 1, length: int = 40, num_classes: int = 10, hidden: int = 100
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * length, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CNN2D(nn.Module):
    """A small image CNN (e.g. MNIST): two 3×3 conv + ReLU + 2×2 max-pool stages, then a linear layer."""

    def __init__(
        self, in_channels: int = 1, size: int = 28, num_classes: int = 10, channels: int = 32
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(2 * channels * (size // 4) ** 2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))
