"""PointNet++ single-scale-grouping part segmentation network (Qi et al., 2017).

Every shared MLP is a 1x1 nn.Conv2d (set abstraction) or nn.Conv1d (propagation, head), so each
prunable weight belongs to a module the Trainer's FLOPs hooks can see.
"""

from __future__ import annotations

import torch
from torch import nn

from tasks.partseg.ops import ball_query, farthest_point_sample, gather, three_nn_interpolate


def _mlp(conv: type[nn.Module], bn: type[nn.Module], widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for cin, cout in zip(widths[:-1], widths[1:], strict=True):
        layers += [conv(cin, cout, 1, bias=False), bn(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class SetAbstraction(nn.Module):
    """Sample centroids (FPS), group neighbours (ball query), shared MLP, max-pool per group.
    npoint None groups the whole cloud into one global feature."""

    def __init__(self, npoint: int | None, radius: float, nsample: int, widths: list[int]):
        super().__init__()
        self.npoint, self.radius, self.nsample = npoint, radius, nsample
        self.mlp = _mlp(nn.Conv2d, nn.BatchNorm2d, widths)

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor | None):
        if self.npoint is None:
            new_xyz = xyz.new_zeros(xyz.shape[0], 1, 3)
            grouped = xyz.unsqueeze(1)
            if feats is not None:
                grouped = torch.cat([grouped, feats.unsqueeze(1)], -1)
        else:
            new_xyz = gather(xyz, farthest_point_sample(xyz, self.npoint))
            idx = ball_query(self.radius, self.nsample, xyz, new_xyz)
            grouped = gather(xyz, idx) - new_xyz.unsqueeze(2)  # local coordinates
            if feats is not None:
                grouped = torch.cat([grouped, gather(feats, idx)], -1)
        out = self.mlp(grouped.permute(0, 3, 1, 2)).max(-1).values  # (B, C, S)
        return new_xyz, out.transpose(1, 2)


class FeaturePropagation(nn.Module):
    """Interpolate coarse features back to a denser level, concatenate the skip, shared MLP."""

    def __init__(self, widths: list[int]):
        super().__init__()
        self.mlp = _mlp(nn.Conv1d, nn.BatchNorm1d, widths)

    def forward(self, xyz, known_xyz, skip, known_feats):
        up = three_nn_interpolate(xyz, known_xyz, known_feats)
        x = up if skip is None else torch.cat([skip, up], -1)
        return self.mlp(x.transpose(1, 2)).transpose(1, 2)


class PointNet2PartSeg(nn.Module):
    """Input: points (B, N, 6) xyz+normals, category (B,) index. Output logits (B, parts, N)."""

    def __init__(
        self,
        num_parts: int = 50,
        num_categories: int = 16,
        width: float = 1.0,
        npoints: tuple[int, int] = (512, 128),
        nsample: int = 32,
        radii: tuple[float, float] = (0.2, 0.4),
    ):
        super().__init__()
        w = lambda c: max(8, int(c * width))  # noqa: E731
        self.num_categories = num_categories
        self.sa1 = SetAbstraction(npoints[0], radii[0], nsample, [3 + 3, w(64), w(64), w(128)])
        self.sa2 = SetAbstraction(
            npoints[1], radii[1], nsample, [w(128) + 3, w(128), w(128), w(256)]
        )
        self.sa3 = SetAbstraction(None, 0.0, 0, [w(256) + 3, w(256), w(512), w(1024)])
        self.fp3 = FeaturePropagation([w(1024) + w(256), w(256), w(256)])
        self.fp2 = FeaturePropagation([w(256) + w(128), w(256), w(128)])
        self.fp1 = FeaturePropagation([w(128) + num_categories + 6, w(128), w(128), w(128)])
        self.head = nn.Sequential(
            nn.Conv1d(w(128), w(128), 1, bias=False), nn.BatchNorm1d(w(128)), nn.ReLU(True),
            nn.Dropout(0.5),
        )  # fmt: skip
        self.classifier = nn.Conv1d(w(128), num_parts, 1)

    def forward(self, points: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        xyz, normals = points[..., :3].contiguous(), points[..., 3:]
        l1_xyz, l1 = self.sa1(xyz, normals)
        l2_xyz, l2 = self.sa2(l1_xyz, l1)
        l3_xyz, l3 = self.sa3(l2_xyz, l2)
        l2 = self.fp3(l2_xyz, l3_xyz, l2, l3)
        l1 = self.fp2(l1_xyz, l2_xyz, l1, l2)
        onehot = nn.functional.one_hot(category, self.num_categories).to(points.dtype)
        onehot = onehot.unsqueeze(1).expand(-1, points.shape[1], -1)
        l0 = self.fp1(xyz, l1_xyz, torch.cat([onehot, points], -1), l1)
        return self.classifier(self.head(l0.transpose(1, 2)))
