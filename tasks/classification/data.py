"""ImageFolder data: the real ImageNet layout, and the embedded digits set written in that layout.

Both profiles read images through torchvision's ImageFolder, which converts grayscale and CMYK
JPEGs (both occur in ImageNet) to RGB.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision import datasets

from gapbench.errors import UserError
from gapbench.task import generate_once

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DIGITS_VERSION = 1


def image_folder(root: Path, transform) -> datasets.ImageFolder:
    """An ImageFolder with a one-line error for a missing or empty split folder."""
    if not root.is_dir():
        raise UserError(
            f"data folder {root} does not exist; --data-root must contain train/ and val/ "
            "in ImageFolder layout (one subfolder per class)"
        )
    try:
        return datasets.ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:
        raise UserError(
            f"{root} is not an ImageFolder tree ({exc}); one subfolder per class"
        ) from exc


def check_same_classes(a: datasets.ImageFolder, b: datasets.ImageFolder, where: Path) -> None:
    if a.classes != b.classes:
        raise UserError(
            f"class folders of {where} differ from the training split's; every split needs the same"
        )


def ensure_digits(cache_dir: Path) -> Path:
    """Write sklearn's bundled digits (1797 real 8x8 scans) as PNGs in ImageFolder layout with a
    fixed stratified 60/20/20 train/val/test split. Done once; a marker file records completion."""
    root = cache_dir / f"digits-v{DIGITS_VERSION}"
    return generate_once(root, (root / "COMPLETE.json").exists, lambda: _write_digits(root))


def _write_digits(root: Path) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    labels = digits.target
    idx = np.arange(len(labels))
    train, rest = train_test_split(idx, test_size=0.4, stratify=labels, random_state=0)
    val, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=0)
    tmp = root.with_name(root.name + ".partial")
    for split, ids in (("train", train), ("val", val), ("test", test)):
        for i in ids:
            folder = tmp / split / str(labels[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], mode="L").save(folder / f"{i:04d}.png")
    counts = {"train": len(train), "val": len(val), "test": len(test)}
    (tmp / "COMPLETE.json").write_text(
        json.dumps({"source": "sklearn.datasets.load_digits", **counts})
    )
    if root.exists():
        import shutil

        shutil.rmtree(root)
    tmp.rename(root)
