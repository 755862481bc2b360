"""PointNet++ point-set primitives in plain vectorised torch (CPU or CUDA, no custom kernels)."""

from __future__ import annotations

import torch


def square_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances (B, N, M) between a (B, N, 3) and b (B, M, 3)."""
    return ((a.unsqueeze(2) - b.unsqueeze(1)) ** 2).sum(-1)


def farthest_point_sample(xyz: torch.Tensor, npoint: int) -> torch.Tensor:
    """Indices (B, npoint) of iterative farthest points, starting from point 0 (deterministic)."""
    b, n, _ = xyz.shape
    idx = torch.zeros(b, npoint, dtype=torch.long, device=xyz.device)
    dist = torch.full((b, n), float("inf"), device=xyz.device)
    farthest = torch.zeros(b, dtype=torch.long, device=xyz.device)
    rows = torch.arange(b, device=xyz.device)
    for i in range(npoint):
        idx[:, i] = farthest
        centroid = xyz[rows, farthest].unsqueeze(1)
        dist = torch.minimum(dist, ((xyz - centroid) ** 2).sum(-1))
        farthest = dist.argmax(-1)
    return idx


def ball_query(
    radius: float, nsample: int, xyz: torch.Tensor, centers: torch.Tensor
) -> torch.Tensor:
    """Indices (B, S, nsample) of the first nsample points (by index) within radius of each center;
    slots beyond the neighbours found repeat the first one, as in the reference implementation."""
    n = xyz.shape[1]
    d = square_distance(centers, xyz)
    ar = torch.arange(n, device=xyz.device).expand_as(d)
    idx = torch.where(d <= radius**2, ar, torch.full_like(ar, n))
    idx = idx.sort(-1).values[..., :nsample]
    first = idx[..., :1].expand_as(idx)
    return torch.where(idx == n, first, idx)


def gather(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """points (B, N, C) indexed by idx (B, ...) -> (B, ..., C)."""
    b = points.shape[0]
    flat = idx.reshape(b, -1)
    out = torch.gather(points, 1, flat.unsqueeze(-1).expand(-1, -1, points.shape[-1]))
    return out.reshape(*idx.shape, points.shape[-1])


def three_nn_interpolate(
    xyz: torch.Tensor, known_xyz: torch.Tensor, known_feats: torch.Tensor
) -> torch.Tensor:
    """Inverse-distance interpolation of known_feats (B, M, C) onto xyz (B, N, 3) from 3 neighbours."""
    if known_xyz.shape[1] == 1:
        return known_feats.expand(-1, xyz.shape[1], -1)
    d = square_distance(xyz, known_xyz)
    d, idx = d.topk(min(3, known_xyz.shape[1]), dim=-1, largest=False)
    w = 1.0 / (d + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    return (gather(known_feats, idx) * w.unsqueeze(-1)).sum(2)
