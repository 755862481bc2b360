"""Translation task: profiles `tiny` (quick default) and `bench` (the shipped board) on a synthetic
language pair (embedded), and `paper` (WMT14 En-De).

The recipe of each profile fixes model size, vocabulary and decoding; the gapbench Profile fixes
budget, batch, optimiser, LR schedule, sparsity policy and GaP schedule. A `-prune-emb` suffix on a
profile name makes the shared embedding / output projection prunable too.

Paper profile vs the official GaP recipe (boone891214/GaP Transformer/scripts/run_DGX1_AMP_8GPU.sh):
transformer_wmt_en_de_big_t2t (pre-norm), dropout 0.1 (attention and ReLU dropout 0.1), Adam
(0.9, 0.997) eps 1e-9, lr 8.46e-4 inverse-sqrt with 4000 warm-up updates, label smoothing 0.1,
no clipping, no weight decay, 5120 tokens per GPU x 8 GPUs per update: the global batch is 40960
tokens, reached by gradient accumulation on fewer devices. Official runs use AMP (`--precision`).
All 96 attention and FFN matrices are pruned; embeddings are not (official profiles/*.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gapbench.errors import UserError
from gapbench.registry import register_task
from gapbench.task import BuildRequest, LrSchedule, OptimizerRecipe, Profile, Task, Workload

from .batching import TokenBatchLoader
from .data import is_bpe, read_corpus
from .metrics import corpus_bleu, label_smoothed_nll
from .model import ModelConfig, Transformer
from .search import beam_search, greedy
from .synthetic import VERSIONS, write_synthetic
from .vocab import BpeTokenCodec, Codec, SentencePieceCodec, train_sentencepiece

PRUNE_EMB_SUFFIX = "-prune-emb"


@dataclass(frozen=True)
class Recipe:
    """Model, vocabulary and decoding of a profile; tests may shrink sizes but keep the code path."""

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
    max_positions: int
    beam: int
    lenpen: float
    label_smoothing: float
    data_version: int = 0  # the embedded synthetic set's version (0: real data only)


def _synthetic(version: int) -> str:
    sizes = "/".join(str(n) for n in VERSIONS[version].values())
    return f"synthetic en-de v{version} (embedded, {sizes} sentences)"


RECIPES = {
    # The board: d=128, 3 + 3 layers on 2000 test sentences (beam 4; incremental decoding keeps it
    # cheap).
    "bench": Recipe(
        dataset=_synthetic(3),
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
        max_positions=256,
        beam=4,
        lenpen=0.6,
        label_smoothing=0.1,
        data_version=3,
    ),
    "paper": Recipe(
        dataset="WMT14 en-de",
        src_lang="en",
        tgt_lang="de",
        vocab_size=32000,
        d_model=1024,
        ffn_dim=4096,
        heads=16,
        encoder_layers=6,
        decoder_layers=6,
        dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.1,
        max_positions=1024,
        beam=4,
        lenpen=0.6,
        label_smoothing=0.1,
    ),
}


# The quick default: a quarter of the board's width, 2 + 2 layers (182k parameters), the v2 set.
RECIPES["tiny"] = replace(
    RECIPES["bench"],
    dataset=_synthetic(2),
    data_version=2,
    d_model=64,
    ffn_dim=128,
    encoder_layers=2,
    decoder_layers=2,
)


def layer_partitions(encoder: int, decoder: int, kappa: int) -> tuple[tuple[str, ...], ...]:
    """kappa consecutive runs of Transformer layers with equal layer counts (the official rule:
    kappa=2 encoder|decoder, 3 thirds, 6 pairs); a prunable embedding joins the last one."""
    layers = [f"encoder.layers.{i}" for i in range(encoder)] + [
        f"decoder.layers.{i}" for i in range(decoder)
    ]
    bounds = [round(i * len(layers) / kappa) for i in range(kappa + 1)]
    parts = [tuple(layers[bounds[i] : bounds[i + 1]]) for i in range(kappa)]
    parts[-1] = (*parts[-1], "output_proj")
    return tuple(parts)


def _profile(
    name: str, recipe: Recipe, prune_emb: bool, headline: float | None = None, **kw: Any
) -> Profile:
    layers = (recipe.encoder_layers, recipe.decoder_layers)
    kappas = [k for k in (2, 3, 6) if k <= sum(layers)]
    return Profile(
        name=name,
        dataset=recipe.dataset,
        dense_layers="none",
        exclude=() if prune_emb else ("output_proj",),
        partitions={k: layer_partitions(*layers, k) for k in kappas},
        needs_data_root=name.startswith("paper"),
        batch_unit="tokens",
        options={"recipe": recipe, "prune_embeddings": prune_emb}
        | ({"headline_sparsity": headline} if headline is not None else {}),
        **kw,
    )


_PROFILE_FIELDS = (
    "epochs",
    "batch_size",
    "device_batch",
    "optimizer",
    "lr_schedule",
    "grad_clip",
    "method_defaults",
)


def _profiles() -> dict[str, Profile]:
    # The quick default (dense, magnitude and gap in about a minute on 2 cores): 255 updates of
    # 1024 tokens, warm-up 10%; GaP encoder | decoder, one epoch each, F=1.
    tiny = dict(
        epochs=3,
        batch_size=1024,
        optimizer=OptimizerRecipe("adam", lr=3e-3, betas=(0.9, 0.98), eps=1e-8),
        lr_schedule=LrSchedule("inverse_sqrt", warmup_steps=25),
        grad_clip=1.0,
        method_defaults={
            "gap": {"partitions": 2, "rounds": 1, "epochs_per_step": 1, "finetune": 1},
            "rigl": {"delta_frac": 0.05},
            "set[variant=rigl]": {"delta_frac": 0.05},
        },
        headline=0.9,
    )
    # The board: 768 tokens (about 40 sentences) an update, 112 updates an epoch, 11 epochs
    # (1232 updates). Warm-up 100 updates (8%); GaP kappa=3 (thirds of the layers), R=3, one
    # epoch (112 updates) per grow phase, F=2 (18%); GMP reaches its target at 60% (LR 0.37x peak
    # there, 40% of the run left); RigL's dT 5% of the run (16 updates before T_end); SET rewires
    # after each of 10 epochs.
    bench = dict(
        epochs=11,
        batch_size=768,
        optimizer=OptimizerRecipe("adam", lr=1.5e-3, betas=(0.9, 0.98), eps=1e-8),
        lr_schedule=LrSchedule("inverse_sqrt", warmup_steps=100),
        grad_clip=1.0,
        method_defaults={
            "gap": {"partitions": 3, "rounds": 3, "epochs_per_step": 1, "finetune": 2},
            "magnitude": {"end": 0.6},
            "rigl": {"delta_frac": 0.05},
            "set[variant=rigl]": {"delta_frac": 0.05},
        },
        headline=0.95,
    )
    paper = dict(
        epochs=340,
        batch_size=40960,
        device_batch=5120,
        optimizer=OptimizerRecipe("adam", lr=8.46e-4, betas=(0.9, 0.997), eps=1e-9),
        lr_schedule=LrSchedule("inverse_sqrt", warmup_steps=4000),
        method_defaults={
            "gap": {"partitions": 3, "rounds": 10, "epochs_per_step": 10, "finetune": 40},
        },
    )
    out = {}
    for base, kw in (("tiny", tiny), ("bench", bench), ("paper", paper)):
        for suffix, prune in (("", False), (PRUNE_EMB_SUFFIX, True)):
            out[base + suffix] = _profile(base + suffix, RECIPES[base], prune, **kw)
    return out


def build_codec(recipe: Recipe, root: Path, train_src: list[str], cache: Path) -> Codec:
    """Keep an existing BPE segmentation; otherwise train (or reuse) a joint sentencepiece model."""
    if is_bpe(train_src):
        from .data import read_lines

        lines = train_src + read_lines(root / f"train.{recipe.tgt_lang}")
        return BpeTokenCodec.from_corpus(lines, recipe.tgt_lang)
    files = [root / f"train.{recipe.src_lang}", root / f"train.{recipe.tgt_lang}"]
    return SentencePieceCodec(train_sentencepiece(files, recipe.vocab_size, cache / "spm"))


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


def tempered_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], temperature: float
) -> torch.Tensor:
    """Token cross-entropy of logits / T, no smoothing (pruning-at-init probes, GraSP's T)."""
    return label_smoothed_nll(
        model(batch["src"], batch["prev"]) / temperature, batch["target"], 0.0
    )


def forward_batch(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(batch["src"], batch["prev"])


@register_task("translation")
class TranslationTask(Task):
    """Encoder-decoder Transformer translation; metric: sacrebleu BLEU on the test split."""

    description = "Transformer translation (tiny: synthetic en-de; paper: Transformer-big WMT14)"
    metrics = ("bleu",)
    profiles = _profiles()

    def __init__(self, **overrides: Any) -> None:
        # Recipe fields (tests shrink the paper model this way); partitions follow the layers.
        if overrides:
            self.profiles = {
                name: _profile(
                    name,
                    replace(p.options["recipe"], **overrides),
                    p.options["prune_embeddings"],
                    p.options.get("headline_sparsity"),
                    **{k: getattr(p, k) for k in _PROFILE_FIELDS},
                )
                for name, p in type(self).profiles.items()
            }

    def build(self, profile: Profile, request: BuildRequest) -> Workload:
        recipe = profile.options["recipe"]
        cache = request.cache_dir
        if request.data_root is None:
            if profile.needs_data_root:
                raise UserError(
                    "profile paper needs --data-root with train/valid/test .en/.de files (WMT14)"
                )
            version = recipe.data_version
            root = write_synthetic(cache / f"synthetic-v{version}", sizes=VERSIONS[version])
        else:
            root = Path(request.data_root)
        corpus = read_corpus(root, recipe.src_lang, recipe.tgt_lang)
        codec = build_codec(recipe, root, corpus["train"].src, cache)
        enc = {
            split: ([codec.encode(s) for s in part.src], [codec.encode(t) for t in part.tgt])
            for split, part in corpus.items()
        }
        refs = {
            split: [codec.postprocess_reference(t) for t in part.tgt]
            for split, part in corpus.items()
        }
        max_tokens = request.batch_size
        train = TokenBatchLoader(
            *enc["train"],
            max_tokens,
            shuffle=True,
            max_len=recipe.max_positions,
            rank=request.rank,
            world=request.world,
        )
        if len(train.src) == 0:
            raise UserError(
                f"{root / ('train.' + recipe.src_lang)}: no sentence fits max_positions"
            )
        val = TokenBatchLoader(*enc["valid"], max_tokens, False, refs["valid"], beam=1)
        test = TokenBatchLoader(*enc["test"], max_tokens, False, refs["test"], beam=recipe.beam)

        torch.manual_seed(request.seed)
        cfg = ModelConfig(
            vocab_size=len(codec),
            d_model=recipe.d_model,
            ffn_dim=recipe.ffn_dim,
            heads=recipe.heads,
            encoder_layers=recipe.encoder_layers,
            decoder_layers=recipe.decoder_layers,
            dropout=recipe.dropout,
            attention_dropout=recipe.attention_dropout,
            activation_dropout=recipe.activation_dropout,
            max_positions=recipe.max_positions,
        )
        model = Transformer(cfg)
        example = next(iter(TokenBatchLoader(*enc["valid"], max_tokens, False)))
        return Workload(
            model=model,
            train_loader=train,
            val_loader=val,
            test_loader=test,
            loss=partial(translation_loss, eps=recipe.label_smoothing),
            tempered_loss=tempered_loss,
            evaluate=partial(evaluate, codec=codec, lenpen=recipe.lenpen),
            forward=forward_batch,
            example_batch=example,
            example_samples=int(example["src"].size(0)),
            dataset=recipe.dataset if request.data_root is None else f"{recipe.dataset} ({root})",
            extra={
                "vocab_size": len(codec),
                "max_tokens_per_device": max_tokens,
                "beam": recipe.beam,
                "lenpen": recipe.lenpen,
                "bpe_input": is_bpe(corpus["train"].src),
                "embeddings": "pruned" if profile.options["prune_embeddings"] else "dense",
                "model": {
                    "d_model": recipe.d_model,
                    "ffn_dim": recipe.ffn_dim,
                    "heads": recipe.heads,
                    "layers": [recipe.encoder_layers, recipe.decoder_layers],
                },
                "train_sentences": len(train.src),
            },
        )
