"""The critics' embedding networks (SPEC.md 3.1 and 3.2): image [N, 1, S, S] -> feature [N, feature_dim].

- `ConvEmbedding`: blocks of Conv3x3 + BatchNorm + ReLU + MaxPool2, then Flatten -> ReLU -> Linear.
  With 4 blocks of 64 channels it is the Omniglot network of both critics ("omniglot" arch: 50 -> 3x3,
  576 -> 256); with 3 blocks of 64/128/128 it is the QuickDraw SimCLR network (48 -> 6x6, 4608 -> 256).
- `ResNet48`: the QuickDraw prototypical network, a ResNet-18-style trunk (stages [2, 2, 2, 2] of
  BasicBlocks, 64/128/256/512 channels, strides 1/2/2/2, 48 -> 6x6), global average pool, Linear 512 -> 256.

torchvision is not a dependency (DESIGN.md), so the residual block is written here.
"""

from __future__ import annotations

import torch
from torch import nn

ARCHS = ("omniglot", "quickdraw")
DEFAULT_IMAGE_SIZE = {"omniglot": 50, "quickdraw": 48}


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class ConvEmbedding(nn.Module):
    """Conv blocks (each halves the size, rounding down) -> Flatten -> ReLU -> Linear(-> feature_dim)."""

    def __init__(self, image_size: int, channels: tuple[int, ...] = (64, 64, 64, 64), feature_dim: int = 256):
        super().__init__()
        side = image_size
        for _ in channels:
            side //= 2
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for {len(channels)} pooling blocks")
        ins = (1, *channels[:-1])
        self.blocks = nn.Sequential(*(conv_block(i, o) for i, o in zip(ins, channels)))
        self.fc = nn.Linear(channels[-1] * side * side, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The ReLU after Flatten mirrors the reference network; it is a no-op after ReLU + MaxPool.
        return self.fc(torch.relu(self.blocks(x).flatten(1)))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BatchNorm, identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet48(nn.Module):
    """Stem Conv3x3(1 -> 64) + BN + ReLU, stages [2, 2, 2, 2], global average pool, Linear(512 -> feature_dim)."""

    def __init__(self, feature_dim: int = 256, stages=(2, 2, 2, 2), channels=(64, 128, 256, 512), strides=(1, 2, 2, 2)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels[0], 3, padding=1, bias=False), nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True))
        layers, cin = [], channels[0]
        for n_blocks, cout, stride in zip(stages, channels, strides):
            for b in range(n_blocks):
                layers.append(BasicBlock(cin, cout, stride if b == 0 else 1))
                cin = cout
        self.stages = nn.Sequential(*layers)
        # Adaptive pooling equals the reference AvgPool(6) at 48 px and keeps other sizes working.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        from drawgap.errors import InputError

        raise InputError(f"expected arch one of {', '.join(ARCHS)}, got {arch!r}", field="arch")
    return arch


def simclr_backbone(arch: str, image_size: int, feature_dim: int) -> nn.Module:
    if check_arch(arch) == "omniglot":
        return ConvEmbedding(image_size, (64, 64, 64, 64), feature_dim)
    return ConvEmbedding(image_size, (64, 128, 128), feature_dim)


def protonet_backbone(arch: str, image_size: int, feature_dim: int) -> nn.Module:
    if check_arch(arch) == "omniglot":
        return ConvEmbedding(image_size, (64, 64, 64, 64), feature_dim)
    return ResNet48(feature_dim)
