"""Sparsity patterns: where a mask may keep weights.

- `unstructured`: any entries.
- `nm:N:M`: every group of M consecutive weights along each row of the weight viewed as
  [out, -1] (the GEMM reduction dimension that 2:4 kernels need) keeps exactly N. The pattern
  fixes the sparsity at 1 - N/M and every layer's count.
- `block:HxW`: whole H x W blocks of the [out, -1] view are kept or removed; layer counts are
  whole blocks, split by the run's distribution over blocks.

Every method selects through `Pattern.select(score, k)` (via `Method.prune_to`), so magnitude,
GaP and the drop/grow of RigL and SET all keep their masks inside the pattern, at exact counts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from gapbench.errors import UserError
from gapbench.sparse.masks import topk_mask


@dataclass(frozen=True)
class Pattern:
    kind: str = "unstructured"  # unstructured | nm | block
    n: int = 0
    m: int = 0
    bh: int = 0
    bw: int = 0

    @classmethod
    def parse(cls, spec: str) -> Pattern:
        if spec in ("", "unstructured"):
            return cls()
        if found := re.fullmatch(r"nm:(\d+):(\d+)", spec):
            n, m = int(found[1]), int(found[2])
            if not 0 < n < m:
                raise UserError(f"--pattern {spec}: needs 0 < N < M, e.g. nm:2:4")
            return cls("nm", n=n, m=m)
        if found := re.fullmatch(r"block:(\d+)x(\d+)", spec):
            bh, bw = int(found[1]), int(found[2])
            if bh < 1 or bw < 1 or bh * bw == 1:
                raise UserError(
                    f"--pattern {spec}: blocks must hold more than one weight, e.g. block:4x4"
                )
            return cls("block", bh=bh, bw=bw)
        raise UserError(
            f"--pattern {spec!r}: use unstructured, nm:N:M (e.g. nm:2:4) or block:HxW (e.g. block:4x4)"
        )

    def __str__(self) -> str:
        if self.kind == "nm":
            return f"nm:{self.n}:{self.m}"
        if self.kind == "block":
            return f"block:{self.bh}x{self.bw}"
        return "unstructured"

    @property
    def fixed_sparsity(self) -> float | None:
        """N:M fixes the sparsity; the others take the run's."""
        return 1 - self.n / self.m if self.kind == "nm" else None

    @property
    def unit(self) -> int:
        """Weights per selectable unit (a block); 1 otherwise."""
        return self.bh * self.bw if self.kind == "block" else 1

    # ---- shapes --------------------------------------------------------------------------------
    def check_shape(self, name: str, shape: torch.Size) -> None:
        rows, cols = shape[0], math.prod(shape[1:]) if len(shape) > 1 else 1
        if self.kind == "nm" and cols % self.m:
            raise UserError(
                f"--pattern {self}: {name} has rows of {cols} weights, not a multiple of {self.m}; "
                "keep it dense (--dense-layers) or use another pattern"
            )
        if self.kind == "block" and (rows % self.bh or cols % self.bw):
            raise UserError(
                f"--pattern {self}: {name} viewed as [{rows}, {cols}] does not tile into {self.bh}x{self.bw} blocks"
            )

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        """[out, -1] view cut into blocks: (rows/bh, cols/bw, bh*bw)."""
        rows = x.shape[0]
        grid = x.reshape(rows, -1)
        cols = grid.shape[1]
        grid = grid.reshape(rows // self.bh, self.bh, cols // self.bw, self.bw).transpose(1, 2)
        return grid.reshape(rows // self.bh, cols // self.bw, self.unit)

    def _unblock(self, blocks: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        rows = like.shape[0]
        cols = like.numel() // rows
        grid = blocks.reshape(rows // self.bh, cols // self.bw, self.bh, self.bw).transpose(1, 2)
        return grid.reshape(like.shape)

    # ---- selection -----------------------------------------------------------------------------
    def count(self, numel: int) -> int:
        """N:M's fixed keep count for a tensor."""
        return numel * self.n // self.m

    def select(self, score: torch.Tensor, k: int) -> torch.Tensor:
        """Exactly k entries inside the pattern with the highest scores (ties: lower index)."""
        if self.kind == "nm":
            if k != self.count(score.numel()):
                raise ValueError(f"N:M keeps {self.count(score.numel())} weights here, not {k}")
            return self.select_per_group(score, torch.full((score.numel() // self.m,), self.n))
        if self.kind == "block":
            if k % self.unit:
                raise ValueError(
                    f"block pattern keeps whole blocks of {self.unit}, not {k} weights"
                )
            sums = self._blocks(score.float()).sum(-1)
            keep = topk_mask(sums, k // self.unit)
            return self._unblock(keep.unsqueeze(-1).expand(*keep.shape, self.unit), score)
        return topk_mask(score, k)

    def select_per_group(self, score: torch.Tensor, per_group: torch.Tensor) -> torch.Tensor:
        """N:M groups: keep `per_group[g]` entries of group g, the highest scores first."""
        groups = score.detach().float().reshape(-1, self.m)
        order = torch.sort(groups, dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(self.m, device=score.device).expand_as(order))
        return (rank < per_group.to(score.device).unsqueeze(1)).reshape(score.shape)

    def quantize(self, counts: list[int], numels: list[int], total: int) -> list[int]:
        """Block patterns: per-layer counts in whole blocks, summing exactly to the total rounded
        to whole blocks (largest remainders)."""
        if self.kind != "block":
            return counts
        from gapbench.sparse.distribution import _round_to_total

        blocks = _round_to_total(
            [c / self.unit for c in counts],
            [n // self.unit for n in numels],
            round(total / self.unit),
        )
        return [b * self.unit for b in blocks]

    def holds(self, mask: torch.Tensor) -> bool:
        """Is `mask` inside the pattern?"""
        if self.kind == "nm":
            return bool((mask.reshape(-1, self.m).sum(1) == self.n).all())
        if self.kind == "block":
            sums = self._blocks(mask.to(torch.int32)).sum(-1)
            return bool(((sums == 0) | (sums == self.unit)).all())
        return True
