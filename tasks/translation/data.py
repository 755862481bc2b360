"""Reading parallel text (train/valid/test .<src>/.<tgt>, e.g. .en/.de) with one clear error per
kind of bad input.

Two on-disk forms are accepted: raw text (subwords are learnt by sentencepiece) and the
Moses-tokenised, BPE'd form with '@@ ' joiners (as produced by fairseq's WMT14 preparation), whose
tokens are used as they are; its output must be un-BPE'd and detokenised before scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gapbench.errors import UserError

SPLITS = ("train", "valid", "test")
BPE_JOINER = "@@ "


@dataclass
class ParallelSplit:
    """Source and target lines of one split, stripped of trailing newlines."""

    src: list[str]
    tgt: list[str]


def read_lines(path: Path, expected: str = "train/valid/test files") -> list[str]:
    """Read a UTF-8 text file; non-UTF-8 bytes and empty files are user errors naming the line.
    `expected` says what the data root must hold, for the missing-file message."""
    if not path.is_file():
        raise UserError(f"{path}: missing file; the data root needs {expected}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror}); check its permissions") from None
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for i, line in enumerate(lines, start=1):
        try:
            out.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{path}:{i}: not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                "re-encode the file as UTF-8"
            ) from None
    if not any(line.strip() for line in out):
        raise UserError(f"{path}: file is empty; provide one sentence per line")
    return out


def read_parallel(root: Path, split: str, src_lang: str, tgt_lang: str) -> ParallelSplit:
    """Read one split; both sides must have the same number of lines and no empty sentences."""
    src_path = root / f"{split}.{src_lang}"
    tgt_path = root / f"{split}.{tgt_lang}"
    expected = f"{', '.join(f'{s}.{src_lang}/.{tgt_lang}' for s in SPLITS)} files"
    src, tgt = read_lines(src_path, expected), read_lines(tgt_path, expected)
    if len(src) != len(tgt):
        raise UserError(
            f"{tgt_path}:{min(len(src), len(tgt)) + 1}: line count {len(tgt)} differs from "
            f"{src_path.name} ({len(src)} lines); source and target must be aligned line by line"
        )
    for i, (s, t) in enumerate(zip(src, tgt), start=1):
        for path, text in ((src_path, s), (tgt_path, t)):
            if not text.strip():
                raise UserError(f"{path}:{i}: empty sentence; remove the pair from both files")
    return ParallelSplit(src, tgt)


def read_corpus(root: Path, src_lang: str, tgt_lang: str) -> dict[str, ParallelSplit]:
    """Read every split under root; a missing data root is a user error too."""
    if not root.is_dir():
        raise UserError(f"{root}: data root is not a directory; pass --data-root with the corpus")
    return {split: read_parallel(root, split, src_lang, tgt_lang) for split in SPLITS}


def is_bpe(lines: list[str], sample: int = 2000) -> bool:
    """True when the text already carries subword-nmt joiners ('@@ ')."""
    return any(BPE_JOINER in line or line.endswith("@@") for line in lines[:sample])


def remove_bpe(text: str) -> str:
    """Undo subword-nmt segmentation: 'new@@ er' -> 'newer' (also a dangling final '@@')."""
    text = (text + " ").replace(BPE_JOINER, "")
    return text.rstrip(" ").removesuffix("@@")
