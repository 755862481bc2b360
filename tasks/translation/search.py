"""Decoding: greedy (validation) and batched beam search with a length penalty (test).

Both decode incrementally: each step runs the decoder on the newest token alone, with the
self-attention keys/values of the prefix and the memory's cross-attention keys/values kept
(`DecoderState`), so a 2000-sentence test split decodes in seconds on a CPU.
"""

from __future__ import annotations

import torch

from .model import DecoderState, Transformer
from .vocab import BOS, EOS, PAD


def _step_logprobs(model: Transformer, prefix: torch.Tensor, state: DecoderState) -> torch.Tensor:
    """Log-probabilities of the token after each prefix; `state` holds the prefix but its last
    token, which this step adds."""
    logp = model.decode_step(prefix[:, -1], state).float().log_softmax(-1)
    logp[:, PAD] = -torch.inf
    logp[:, BOS] = -torch.inf
    return logp


def max_length(src: torch.Tensor, a: float = 1.2, b: int = 10) -> int:
    """Longest hypothesis allowed for this batch: a * longest source + b."""
    return int(a * src.size(1) + b)


@torch.no_grad()
def greedy(model: Transformer, src: torch.Tensor, max_len: int | None = None) -> list[list[int]]:
    """Arg-max decoding; returns token ids without BOS/EOS."""
    max_len = max_len or max_length(src)
    state = model.start_decoding(*model.encode(src))
    prefix = torch.full((src.size(0), 1), BOS, dtype=torch.long, device=src.device)
    done = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    for step in range(max_len):
        nxt = _step_logprobs(model, prefix, state).argmax(-1)
        if step == max_len - 1:  # forced EOS, as in beam_search
            nxt = torch.full_like(nxt, EOS)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        prefix = torch.cat([prefix, nxt[:, None]], dim=1)
        done |= nxt == EOS
        if bool(done.all()):
            break
    return [_strip(row) for row in prefix[:, 1:].tolist()]


def _strip(ids: list[int]) -> list[int]:
    out = []
    for i in ids:
        if i in (EOS, PAD):
            break
        out.append(i)
    return out


@torch.no_grad()
def beam_search(
    model: Transformer,
    src: torch.Tensor,
    beam: int = 4,
    lenpen: float = 0.6,
    max_len: int | None = None,
) -> list[list[int]]:
    """Beam search; finished hypotheses are ranked by log-prob / length**lenpen (fairseq's rule).

    A sentence stops once `beam` hypotheses have finished; at max_len EOS is forced.
    """
    max_len = max_len or max_length(src)
    bsz, dev = src.size(0), src.device
    memory, mask = model.encode(src)
    state = model.start_decoding(
        memory.repeat_interleave(beam, dim=0), mask.repeat_interleave(beam, dim=0)
    )
    prefix = torch.full((bsz * beam, 1), BOS, dtype=torch.long, device=dev)
    scores = torch.full((bsz, beam), -torch.inf, device=dev)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first one
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(bsz)]
    active = [True] * bsz
    for step in range(max_len):
        logp = _step_logprobs(model, prefix, state)
        if step == max_len - 1:
            eos_col = logp[:, EOS].clone()
            logp.fill_(-torch.inf)
            logp[:, EOS] = eos_col
        vocab = logp.size(1)
        cand = (scores.view(-1, 1) + logp).view(bsz, beam * vocab)
        top_scores, top_idx = cand.topk(2 * beam, dim=1)
        top_scores, top_idx = top_scores.tolist(), top_idx.tolist()
        new_rows, new_tok, new_scores = [], [], []
        prefix_rows = prefix[:, 1:].tolist()
        for b in range(bsz):
            kept = 0
            for s, idx in zip(top_scores[b], top_idx[b]):
                if kept == beam:
                    break
                src_beam, tok = divmod(idx, vocab)
                row = b * beam + src_beam
                if s == -torch.inf:
                    continue
                if tok == EOS:
                    if active[b] and len(finished[b]) < beam:
                        finished[b].append((s / (step + 1) ** lenpen, prefix_rows[row]))
                    continue
                new_rows.append(row)
                new_tok.append(tok)
                new_scores.append(s)
                kept += 1
            while kept < beam:  # pad dead beams so every sentence keeps `beam` rows
                new_rows.append(b * beam)
                new_tok.append(PAD)
                new_scores.append(-torch.inf)
                kept += 1
            if len(finished[b]) >= beam:
                active[b] = False
        if not any(active):
            break
        rows = torch.tensor(new_rows, device=dev)
        tok = torch.tensor(new_tok, device=dev)
        prefix = torch.cat([prefix[rows], tok[:, None]], dim=1)
        state.select(rows)
        scores = torch.tensor(new_scores, device=dev).view(bsz, beam)
        scores[~torch.tensor(active, device=dev)] = -torch.inf
    return [max(f, key=lambda x: x[0])[1] if f else [] for f in finished]
