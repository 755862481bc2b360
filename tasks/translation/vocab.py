"""Joint source/target subword vocabularies (one table, because embeddings are shared).

Raw text gets a sentencepiece model trained by gapbench on the training text and cached; text that
is already BPE'd keeps its segmentation and only needs a token table. Either way `decode` returns
detokenised text, because BLEU is computed by sacrebleu on detokenised output.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Protocol

from gapbench.errors import UserError

from .data import remove_bpe

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")


class Codec(Protocol):
    """Text <-> token ids; ids exclude BOS/EOS, which the batcher adds."""

    def __len__(self) -> int: ...
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def postprocess_reference(self, text: str) -> str: ...


class SentencePieceCodec:
    """sentencepiece unigram model over raw text; decoding yields raw (detokenised) text."""

    def __init__(self, model_file: Path) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if i > UNK])

    def postprocess_reference(self, text: str) -> str:
        return text


def moses_detokenizer(lang: str):
    """A Moses detokeniser (sacremoses) for text that was Moses-tokenised before BPE."""
    from sacremoses import MosesDetokenizer

    return MosesDetokenizer(lang=lang)


class BpeTokenCodec:
    """Token table over pre-BPE'd, Moses-tokenised text; decoding undoes BPE and tokenisation."""

    def __init__(self, tokens: list[str], tgt_lang: str) -> None:
        self.itos = list(SPECIALS) + [t for t in tokens if t not in SPECIALS]
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.detok = moses_detokenizer(tgt_lang)

    @classmethod
    def from_corpus(cls, lines: list[str], tgt_lang: str, min_count: int = 1) -> BpeTokenCodec:
        counts = Counter(tok for line in lines for tok in line.split())
        tokens = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: -counts[t])
        return cls(tokens, tgt_lang)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(tok, UNK) for tok in text.split()]

    def decode(self, ids: list[int]) -> str:
        return self.postprocess_reference(" ".join(self.itos[i] for i in ids if i > UNK))

    def postprocess_reference(self, text: str) -> str:
        return self.detok.detokenize(remove_bpe(text).split(), unescape=True)


def _fingerprint(paths: list[Path], vocab_size: int) -> str:
    """Cache key from file identity (path, size, mtime) so big corpora are not re-hashed."""
    h = hashlib.sha1(str(vocab_size).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def train_sentencepiece(
    train_files: list[Path], vocab_size: int, cache_dir: Path, max_sentences: int = 2_000_000
) -> Path:
    """Train (or reuse from cache) a joint unigram sentencepiece model on the training text."""
    import sentencepiece as spm

    key = _fingerprint(train_files, vocab_size)
    model = cache_dir / f"spm_{key}.model"
    if model.exists():
        return model
    cache_dir.mkdir(parents=True, exist_ok=True)
    prefix = cache_dir / f"spm_{key}.tmp"
    try:
        spm.SentencePieceTrainer.train(
            input=",".join(str(p) for p in train_files),
            model_prefix=str(prefix),
            vocab_size=vocab_size,
            model_type="unigram",
            character_coverage=1.0,
            pad_id=PAD,
            bos_id=BOS,
            eos_id=EOS,
            unk_id=UNK,
            hard_vocab_limit=False,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            num_threads=2,
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise UserError(f"{train_files[0]}: sentencepiece training failed ({exc})") from None
    Path(f"{prefix}.vocab").unlink(missing_ok=True)
    Path(f"{prefix}.model").replace(model)
    (cache_dir / f"spm_{key}.json").write_text(json.dumps([str(p) for p in train_files]))
    return model
