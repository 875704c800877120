"""ResNets for 32×32 images with the CIFAR stem (3×3 conv, no max-pool) and Wide ResNets.

* ``resnet18``: He et al. (2016) BasicBlock [2, 2, 2, 2], widths 64–512, CIFAR stem (the paper's
  ResNet-18, as in kuangliu/pytorch-cifar and the official TSAM code);
* ``wrn16_8``: Zagoruyko & Komodakis (2016) WRN-16-8 (pre-activation blocks, widths 16·k);
* ``resnet8``: BasicBlock [1, 1, 1], widths 16–64 (≈ 78k parameters), sized for 2-core CPUs.
"""

from __future__ import annotations

from torch import Tensor, nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


class CifarResNet(nn.Module):
    def __init__(
        self, blocks: list[int], widths: list[int], in_channels: int = 3, num_classes: int = 10
    ):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())  # fmt: skip
        layers, cin = [], widths[0]
        for i, (count, width) in enumerate(zip(blocks, widths, strict=True)):
            for j in range(count):
                layers.append(BasicBlock(cin, width, 2 if (j == 0 and i > 0) else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(self.stem(x))
        return self.head(out.mean(dim=(2, 3)))


class WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = (
            None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(x).relu()
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(self.bn2(out).relu()))
        return out + skip


class WideResNet(nn.Module):
    def __init__(self, depth: int = 16, widen: int = 8, in_channels: int = 3, num_classes: int = 10,
                 dropout: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks, cin = [], widths[0]
        for i, width in enumerate(widths[1:]):
            for j in range(n):
                blocks.append(WideBlock(cin, width, 2 if (j == 0 and i > 0) else 1, dropout))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn(self.blocks(self.stem(x))).relu()
        return self.head(out.mean(dim=(2, 3)))


def resnet18(in_channels: int = 3, num_classes: int = 10) -> CifarResNet:
    return CifarResNet([2, 2, 2, 2], [64, 128, 256, 512], in_channels, num_classes)


def resnet8(in_channels: int = 3, num_classes: int = 10) -> CifarResNet:
    return CifarResNet([1, 1, 1], [16, 32, 64], in_channels, num_classes)


def wrn16_8(in_channels: int = 3, num_classes: int = 10) -> WideResNet:
    return WideResNet(16, 8, in_channels, num_classes)
