"""Detectors: torchvision SSD300-VGG16 (paper) and a narrow SSD for 128 px images (tiny)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import ssd300_vgg16
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class TinyBackbone(nn.Module):
    """Feature maps at strides 8, 16, 32, 64 (16, 8, 4, 2 cells for a 128 px input)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            _conv(3, width // 2, 2),
            _conv(width // 2, width, 2),
            _conv(width, width, 1),
            _conv(width, 2 * width, 2),
        )
        self.extra1 = _conv(2 * width, 4 * width, 2)
        self.extra2 = _conv(4 * width, 4 * width, 2)
        self.extra3 = _conv(4 * width, 4 * width, 2)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        f0 = self.body(x)
        f1 = self.extra1(f0)
        f2 = self.extra2(f1)
        f3 = self.extra3(f2)
        return OrderedDict([("0", f0), ("1", f1), ("2", f2), ("3", f3)])


def build_tiny_ssd(num_classes: int, size: int = 128) -> SSD:
    """torchvision's SSD (matching, hard-negative mining, box coding, NMS) on a narrow backbone
    with default boxes scaled to the small image."""
    anchors = DefaultBoxGenerator([[2], [2, 3], [2, 3], [2]], min_ratio=0.15, max_ratio=0.9)
    return SSD(
        TinyBackbone(),
        anchors,
        (size, size),
        num_classes + 1,  # + background
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
        detections_per_img=50,
        topk_candidates=200,
    )


def build_ssd300(num_classes: int) -> SSD:
    # No weight downloads here: backbone and detector train from scratch.
    return ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes + 1)
