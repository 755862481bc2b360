"""Training loss (label-smoothed cross-entropy) and the test metric (sacrebleu BLEU)."""

from __future__ import annotations

import torch

from .vocab import PAD


def label_smoothed_nll(
    logits: torch.Tensor, target: torch.Tensor, eps: float = 0.1
) -> torch.Tensor:
    """fairseq's label_smoothed_cross_entropy, averaged over non-pad target tokens."""
    logp = logits.float().log_softmax(-1)
    keep = target != PAD
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    smooth = -logp.sum(-1)
    loss = (1.0 - eps - eps / (logp.size(-1) - 1)) * nll + eps / (logp.size(-1) - 1) * smooth
    return (loss * keep).sum() / keep.sum().clamp(min=1)


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """Case-sensitive BLEU with sacrebleu's default 13a tokenisation on detokenised text."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)
