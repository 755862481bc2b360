"""Translation task: profiles `tiny` (synthetic language pair, embedded) and `paper` (WMT14 En-De).

The profile fixes model size, vocabulary, batching, optimizer and the GaP schedule. A `-prune-emb`
suffix on a profile name makes the shared embedding / output projection prunable too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gapbench.errors import UserError
from gapbench.task import Task, TaskSetup, register_task

from .batching import TokenBatchLoader
from .data import is_bpe, read_corpus
from .metrics import corpus_bleu, label_smoothed_nll
from .model import ModelConfig, Transformer, layer_groups, prunable_names
from .search import beam_search, greedy
from .synthetic import write_synthetic
from .vocab import BpeTokenCodec, Codec, SentencePieceCodec, train_sentencepiece

PRUNE_EMB_SUFFIX = "-prune-emb"
SYNTHETIC_VERSION = 2


@dataclass(frozen=True)
class Profile:
    """Everything a profile decides; tests may override fields (sizes) but keep the code path."""

    name: str
    dataset: str
    src_lang: str
    tgt_lang: str
    vocab_size: int
    d_model: int
    ffn_dim: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    dropout: float
    attention_dropout: float
    activation_dropout: float
    max_tokens: int
    max_positions: int
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    warmup_steps: int
    epochs: int
    beam: int
    lenpen: float
    label_smoothing: float
    grad_clip: float | None
    gap_defaults: dict[str, Any]
    prune_embeddings: bool = False


PROFILES = {
    "tiny": Profile(
        name="tiny",
        dataset="synthetic en-de (embedded)",
        src_lang="en",
        tgt_lang="de",
        vocab_size=320,
        d_model=128,
        ffn_dim=256,
        heads=4,
        encoder_layers=3,
        decoder_layers=3,
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        max_tokens=2048,
        max_positions=256,
        lr=2e-3,
        betas=(0.9, 0.98),
        weight_decay=0.0,
        warmup_steps=200,
        epochs=6,
        beam=4,
        lenpen=0.6,
        label_smoothing=0.1,
        grad_clip=1.0,
        gap_defaults={"partitions": 2, "rounds": 1, "epochs_per_step": 2, "finetune": 2},
    ),
    # transformer_wmt_en_de_big_t2t with the GaP paper's optimiser settings.
    "paper": Profile(
        name="paper",
        dataset="WMT14 en-de",
        src_lang="en",
        tgt_lang="de",
        vocab_size=32000,
        d_model=1024,
        ffn_dim=4096,
        heads=16,
        encoder_layers=6,
        decoder_layers=6,
        dropout=0.3,
        attention_dropout=0.1,
        activation_dropout=0.1,
        max_tokens=3584,
        max_positions=1024,
        lr=8.46e-4,
        betas=(0.9, 0.997),
        weight_decay=0.0,
        warmup_steps=4000,
        epochs=340,
        beam=4,
        lenpen=0.6,
        label_smoothing=0.1,
        grad_clip=0.0,
        gap_defaults={"partitions": 3, "rounds": 10, "epochs_per_step": 10, "finetune": 40},
    ),
}


def resolve_profile(name: str) -> Profile:
    """'paper' / 'tiny', optionally with the '-prune-emb' suffix."""
    base = name.removesuffix(PRUNE_EMB_SUFFIX)
    if base not in PROFILES:
        raise UserError(f"translation has no profile {name!r}; choose tiny or paper")
    profile = PROFILES[base]
    return replace(profile, prune_embeddings=True) if name.endswith(PRUNE_EMB_SUFFIX) else profile


def kappa_partitions(groups: list[list[str]], kappa: int) -> list[list[str]]:
    """Cut the per-layer groups (forward order) into kappa consecutive runs of equal layer count."""
    n = len(groups)
    bounds = [round(i * n / kappa) for i in range(kappa + 1)]
    return [sum(groups[bounds[i] : bounds[i + 1]], []) for i in range(kappa)]


def build_partitions(names: list[str], kappas: tuple[int, ...]) -> dict[int, list[list[str]]]:
    """Paper partitions: kappa=2 encoder|decoder, 3 by thirds of the layers, 6 pairs of layers.

    A prunable embedding joins the last partition (it is the output projection too).
    """
    emb = [n for n in names if n == "output_proj.weight"]
    groups = layer_groups([n for n in names if n not in emb])
    out: dict[int, list[list[str]]] = {}
    for k in kappas:
        if k <= len(groups):
            parts = kappa_partitions(groups, k)
            parts[-1] = parts[-1] + emb
            out[k] = parts
    return out


def build_codec(profile: Profile, root: Path, train_src: list[str], cache: Path) -> Codec:
    """Keep an existing BPE segmentation; otherwise train (or reuse) a joint sentencepiece model."""
    if is_bpe(train_src):
        from .data import read_lines

        lines = train_src + read_lines(root / f"train.{profile.tgt_lang}")
        return BpeTokenCodec.from_corpus(lines, profile.tgt_lang)
    files = [root / f"train.{profile.src_lang}", root / f"train.{profile.tgt_lang}"]
    return SentencePieceCodec(train_sentencepiece(files, profile.vocab_size, cache / "spm"))


def evaluate(
    model: nn.Module, loader: TokenBatchLoader, codec: Codec, lenpen: float
) -> dict[str, float]:
    """Decode the split (beam from the loader, greedy at beam 1) and score BLEU on detokenised text."""
    hyps: dict[int, str] = {}
    for batch in loader:
        src = batch["src"]
        if loader.beam > 1:
            out = beam_search(model, src, beam=loader.beam, lenpen=lenpen)
        else:
            out = greedy(model, src)
        for i, ids in zip(batch["ids"].tolist(), out):
            hyps[i] = codec.decode(ids)
    refs = loader.references or []
    order = sorted(hyps)
    return {"bleu": corpus_bleu([hyps[i] for i in order], [refs[i] for i in order])}


def translation_loss(model: nn.Module, batch: dict[str, torch.Tensor], eps: float) -> torch.Tensor:
    return label_smoothed_nll(model(batch["src"], batch["prev"]), batch["target"], eps)


def forward_batch(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(batch["src"], batch["prev"])


def make_adam(params: Any, profile: Profile) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        params, lr=profile.lr, betas=profile.betas, eps=1e-8, weight_decay=profile.weight_decay
    )


@register_task("translation")
class TranslationTask(Task):
    """Encoder-decoder Transformer translation; metric: sacrebleu BLEU on the test split."""

    description = "Transformer translation (tiny: synthetic en-de; paper: Transformer-big WMT14)"
    profiles = ("tiny", "paper", "tiny" + PRUNE_EMB_SUFFIX, "paper" + PRUNE_EMB_SUFFIX)
    metrics = ("bleu",)

    def __init__(self, **overrides: Any) -> None:
        self.overrides = overrides  # Profile fields (tests shrink the paper model this way)

    def setup(
        self,
        profile: str,
        data_root: Path | None,
        seed: int,
        device: torch.device,
        batch_size: int | None = None,
        cache_dir: Path | None = None,
    ) -> TaskSetup:
        prof = replace(resolve_profile(profile), **self.overrides)
        cache = Path(cache_dir) if cache_dir is not None else Path("results/cache/translation")
        if data_root is None:
            if prof.name == "paper":
                raise UserError(
                    "profile paper needs --data-root with train/valid/test .en/.de files (WMT14)"
                )
            root = write_synthetic(cache / f"synthetic-v{SYNTHETIC_VERSION}")
        else:
            root = Path(data_root)
        corpus = read_corpus(root, prof.src_lang, prof.tgt_lang)
        codec = build_codec(prof, root, corpus["train"].src, cache)
        enc = {
            split: ([codec.encode(s) for s in part.src], [codec.encode(t) for t in part.tgt])
            for split, part in corpus.items()
        }
        refs = {
            split: [codec.postprocess_reference(t) for t in part.tgt]
            for split, part in corpus.items()
        }
        max_tokens = batch_size or prof.max_tokens
        train = TokenBatchLoader(
            *enc["train"], max_tokens, shuffle=True, max_len=prof.max_positions
        )
        if len(train.src) == 0:
            raise UserError(f"{root / ('train.' + prof.src_lang)}: no sentence fits max_positions")
        val = TokenBatchLoader(*enc["valid"], max_tokens, False, refs["valid"], beam=1)
        test = TokenBatchLoader(*enc["test"], max_tokens, False, refs["test"], beam=prof.beam)

        torch.manual_seed(seed)
        cfg = ModelConfig(
            vocab_size=len(codec),
            d_model=prof.d_model,
            ffn_dim=prof.ffn_dim,
            heads=prof.heads,
            encoder_layers=prof.encoder_layers,
            decoder_layers=prof.decoder_layers,
            dropout=prof.dropout,
            attention_dropout=prof.attention_dropout,
            activation_dropout=prof.activation_dropout,
            max_positions=prof.max_positions,
        )
        model = Transformer(cfg).to(device)
        prunable = prunable_names(model, prof.prune_embeddings)
        flops_batch = next(iter(TokenBatchLoader(*enc["valid"], max_tokens, False)))
        return TaskSetup(
            model=model,
            train_loader=train,
            val_loader=val,
            test_loader=test,
            loss=partial(translation_loss, eps=prof.label_smoothing),
            evaluate=partial(evaluate, codec=codec, lenpen=prof.lenpen),
            make_optimizer=partial(make_adam, profile=prof),
            epochs=prof.epochs,
            metric="bleu",
            dataset=prof.dataset if data_root is None else f"{prof.dataset} ({root})",
            prunable=prunable,
            policy={
                "prunable": "attention q/k/v/out projections and both FFN matrices of every layer",
                "embeddings_and_output_projection": "pruned" if prof.prune_embeddings else "dense",
                "biases_layernorms_positions": "dense",
                "bpe_input": is_bpe(corpus["train"].src),
            },
            partitions=build_partitions(prunable, (2, 3, 6)),
            gap_defaults=dict(prof.gap_defaults),
            lr_schedule="inverse_sqrt",
            warmup_steps=prof.warmup_steps,
            flops_batch=flops_batch,
            forward=forward_batch,
            flops_batch_size=int(flops_batch["src"].size(0)),
            grad_clip=prof.grad_clip or None,
            extra={
                "vocab_size": len(codec),
                "max_tokens": max_tokens,
                "beam": prof.beam,
                "lenpen": prof.lenpen,
                "model": {
                    "d_model": prof.d_model,
                    "ffn_dim": prof.ffn_dim,
                    "heads": prof.heads,
                    "layers": [prof.encoder_layers, prof.decoder_layers],
                },
                "train_sentences": len(train.src),
            },
        )
