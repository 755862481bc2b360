"""Models: torchvision ResNet-50 (paper) and a narrow ResNet for 16x16 digits (tiny)."""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet50
from torchvision.models.resnet import BasicBlock


class TinyResNet(nn.Module):
    """Three stages of two basic blocks (16/32/64 channels): a real residual CNN that trains on
    2 CPU cores in seconds per epoch."""

    def __init__(
        self,
        num_classes: int = 10,
        widths: tuple[int, ...] = (16, 32, 64),
        stem_stride: int = 1,
        blocks: int = 2,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        layers = []
        in_ch = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or in_ch != w:
                down = nn.Sequential(nn.Conv2d(in_ch, w, 1, stride, bias=False), nn.BatchNorm2d(w))
            rest = [BasicBlock(w, w) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(BasicBlock(in_ch, w, stride, down), *rest))
            in_ch = w
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


def build_resnet50(num_classes: int) -> nn.Module:
    # weights=None: no downloads; sparse training starts from scratch anyway.
    return resnet50(weights=None, num_classes=num_classes)
