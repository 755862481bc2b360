"""Token-based batching: batches bounded by padded tokens, built from length-sorted sentences.

Sorting by length keeps padding low; batches are fixed once, and each epoch only shuffles the order
of batches with the global torch RNG (which the Trainer seeds per epoch, identically on every rank),
so runs are resumable. Under data parallelism rank r takes batches r, r+N, ... of that shuffled
order: each rank builds (pads) only its own batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .vocab import BOS, EOS, PAD


def make_batches(src_lens: list[int], tgt_lens: list[int], max_tokens: int) -> list[list[int]]:
    """Group sentence indices so that batch_size * longest side <= max_tokens.

    Lengths include EOS. A single sentence longer than max_tokens still gets its own batch.
    """
    order = sorted(range(len(src_lens)), key=lambda i: (src_lens[i], tgt_lens[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        longest = max(cur_max, src_lens[i], tgt_lens[i])
        if cur and longest * (len(cur) + 1) > max_tokens:
            batches.append(cur)
            cur, longest = [], max(src_lens[i], tgt_lens[i])
        cur.append(i)
        cur_max = longest
    if cur:
        batches.append(cur)
    return batches


def _pad(seqs: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(seqs), max(len(s) for s in seqs)), PAD, dtype=torch.long)
    for row, s in enumerate(seqs):
        out[row, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate(src: list[list[int]], tgt: list[list[int]], ids: list[int]) -> dict[str, torch.Tensor]:
    """src + EOS; decoder input BOS + tgt; decoder target tgt + EOS (teacher forcing)."""
    return {
        "src": _pad([s + [EOS] for s in src]),
        "prev": _pad([[BOS] + t for t in tgt]),
        "target": _pad([t + [EOS] for t in tgt]),
        "ids": torch.tensor(ids, dtype=torch.long),
    }


class TokenBatchLoader:
    """Re-iterable loader over one split; `references` are the detokenised target sentences."""

    def __init__(
        self,
        src: list[list[int]],
        tgt: list[list[int]],
        max_tokens: int,
        shuffle: bool,
        references: list[str] | None = None,
        beam: int = 1,
        max_len: int | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        keep = [
            i
            for i in range(len(src))
            if max_len is None or max(len(src[i]), len(tgt[i])) + 1 <= max_len
        ]
        self.src, self.tgt = [src[i] for i in keep], [tgt[i] for i in keep]
        self.ids = keep
        self.references = references
        self.shuffle, self.beam, self.max_tokens = shuffle, beam, max_tokens
        self.batches = make_batches(
            [len(s) + 1 for s in self.src], [len(t) + 1 for t in self.tgt], max_tokens
        )
        self.rank, self.world = rank, world
        self.samples_per_epoch = len(self.src)  # sentences, all ranks together

    def __len__(self) -> int:
        return len(self.batches) // self.world

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        n = len(self.batches)
        order = torch.randperm(n).tolist() if self.shuffle else list(range(n))
        mine = order[self.rank :: self.world][: len(self)]
        for b in mine:
            idx = self.batches[b]
            yield collate(
                [self.src[i] for i in idx], [self.tgt[i] for i in idx], [self.ids[i] for i in idx]
            )
