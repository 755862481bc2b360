"""Reader for the ShapeNet-part `..._v0_normal` layout; the same code reads the tiny data set.

Layout: synsetoffset2category.txt, <synset>/<id>.txt rows `x y z nx ny nz part`, and
train_test_split/shuffled_{train,val,test}_file_list.json entries "shape_data/<synset>/<id>".
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gapbench.errors import UserError
from tasks.partseg.categories import CATEGORIES, CATEGORY_INDEX, SYNSET_TO_NAME, part_range


def _read_text(path: Path) -> str:
    """A UTF-8 text file's content; unreadable or non-UTF-8 is a one-line error naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror}); check its permissions") from None


def read_categories(root: Path) -> dict[str, str]:
    """synset -> category name for the categories this data root provides (may be a subset)."""
    path = root / "synsetoffset2category.txt"
    if not path.is_file():
        raise UserError(f"{path} is missing; --data-root must be the ShapeNet-part normal folder")
    out: dict[str, str] = {}
    for line in _read_text(path).splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in SYNSET_TO_NAME:
            raise UserError(
                f"{path}: bad line {line!r}; expected '<Name> <synset>' of ShapeNet-part"
            )
        out[parts[1]] = SYNSET_TO_NAME[parts[1]]
    return out


def read_split(root: Path, split: str, synsets: dict[str, str]) -> list[tuple[Path, str]]:
    """(file, category name) for each shape listed in the split file."""
    path = root / "train_test_split" / f"shuffled_{split}_file_list.json"
    if not path.is_file():
        raise UserError(f"{path} is missing; add the train_test_split folder to --data-root")
    try:
        entries = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg}); re-create the split file") from None
    if not isinstance(entries, list):
        raise UserError(
            f"{path} holds a JSON {type(entries).__name__}; expected a list of "
            "'shape_data/<synset>/<id>' strings"
        )
    items = []
    for entry in entries:
        bits = entry.split("/") if isinstance(entry, str) else []
        if len(bits) != 3:
            raise UserError(f"{path}: entry {entry!r} is not 'shape_data/<synset>/<id>'")
        _, syn, sid = bits
        if syn not in synsets or not (root / syn).is_dir():
            raise UserError(
                f"{path}: category {syn} is in the split list but not on disk "
                f"(no {root / syn} folder or synsetoffset2category.txt line); fix the split file"
            )
        items.append((root / syn / f"{sid}.txt", synsets[syn]))
    return items


def load_shape(path: Path, category: str) -> np.ndarray:
    """Rows (N, 7) float32 of one shape, with part labels validated against its category."""
    if not path.is_file():
        raise UserError(f"{path} is listed in the split files but missing; restore it")
    try:
        with warnings.catch_warnings():  # an empty file: numpy warns, the check below says it
            warnings.simplefilter("ignore", UserWarning)
            data = np.loadtxt(path, dtype=np.float32, ndmin=2)
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{path}: rows must be 7 numbers 'x y z nx ny nz part'") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror}); check its permissions") from None
    if data.shape[0] == 0:
        raise UserError(f"{path}: no points; rows must be 7 numbers 'x y z nx ny nz part'")
    if data.shape[1] != 7:
        raise UserError(f"{path}: expected 7 columns 'x y z nx ny nz part', got {data.shape[1]}")
    if not np.isfinite(data).all():
        row = int(np.nonzero(~np.isfinite(data).all(axis=1))[0][0]) + 1
        raise UserError(f"{path}:{row}: not a finite number (nan or inf); fix or drop the row")
    if (data[:, 6] != np.round(data[:, 6])).any():
        raise UserError(f"{path}: part labels (column 7) must be whole numbers")
    labels = data[:, 6].astype(np.int64)
    ok = part_range(category)
    bad = (labels < ok.start) | (labels >= ok.stop)
    if bad.any():
        raise UserError(
            f"{path}: part label {labels[bad][0]} is outside {category}'s range "
            f"{ok.start}-{ok.stop - 1}; use ShapeNet-part global part ids"
        )
    return data


class PartSegDataset(Dataset):
    """Fixed-size point samples of each shape: (points (N,6), category index, labels (N,)).

    Training resamples points and applies random scale/shift each epoch (global RNG, seeded by the
    Trainer); evaluation uses a fixed subset so metrics are reproducible.
    """

    def __init__(self, root: Path, split: str, npoints: int, train: bool):
        synsets = read_categories(root)
        self.items = read_split(root, split, synsets)
        self.shapes = [load_shape(p, c) for p, c in self.items]
        self.cats = [CATEGORY_INDEX[c] for _, c in self.items]
        self.npoints, self.train = npoints, train

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int):
        data = self.shapes[i]
        n = len(data)
        if self.train:
            choice = np.random.choice(n, self.npoints, replace=n < self.npoints)
        else:
            rng = np.random.default_rng(i)
            choice = rng.choice(n, self.npoints, replace=n < self.npoints)
        pts = data[choice, :6].copy()
        xyz = pts[:, :3] - pts[:, :3].mean(0)
        xyz /= max(float(np.linalg.norm(xyz, axis=1).max()), 1e-8)
        if self.train:
            xyz = xyz * np.random.uniform(0.8, 1.25, (1, 3)) + np.random.uniform(-0.1, 0.1, (1, 3))
        pts[:, :3] = xyz
        return (
            torch.from_numpy(pts.astype(np.float32)),
            torch.tensor(self.cats[i]),
            torch.from_numpy(data[choice, 6].astype(np.int64)),
        )


def category_mask(num_parts: int = 50) -> torch.Tensor:
    """(16, num_parts) bool: which global parts each category owns, to restrict predictions."""
    mask = torch.zeros(len(CATEGORIES), num_parts, dtype=torch.bool)
    for name, idx in CATEGORY_INDEX.items():
        r = part_range(name)
        mask[idx, r.start : r.stop] = True
    return mask
