"""ImageFolder data: the real ImageNet layout, and the embedded digits set written in that layout.

Both profiles read images through torchvision's ImageFolder, which converts grayscale and CMYK
JPEGs (both occur in ImageNet) to RGB.

A corrupt image fails the run; it is never skipped, since a skipped file silently changes the data
set that results are compared on. Every image's header is read when the split is opened (format and
size only, no decoding: a few seconds per 100k files), so a file that is not an image, or is empty
or cut short in its header, fails up front with its path. A file whose header is fine but whose
pixel data is broken is found when it is decoded, and fails with its path too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision import datasets

from gapbench.errors import UserError
from gapbench.task import generate_once

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DIGITS_VERSION = 1
_CHECKED: set[tuple[str, int]] = set()  # split folders whose images were checked in this process


def _header_problem(path: Path) -> str | None:
    """Why the image at `path` cannot be opened (its header only), or None."""
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 (parsing the header is the check)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error...
        return f"{type(exc).__name__}: {exc}"
    return None


def check_images(paths: Iterable[Path], where: Path) -> None:
    """Read every image's header (threads: the cost is file opens); one error naming the first
    bad file and how many there are."""
    paths = list(paths)
    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = [(p, why) for p, why in zip(paths, pool.map(_header_problem, paths)) if why]
    if problems:
        path, why = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"unreadable image {path}{more} under {where}: {why}; replace or remove it")


def load_rgb(path: str) -> Image.Image:
    """ImageFolder's loader with a one-line error naming a file whose pixel data is broken."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")  # grayscale and CMYK become RGB
    except Exception as exc:
        raise UserError(f"cannot decode image {path}: {exc}; replace or remove it") from None


def image_folder(root: Path, transform) -> datasets.ImageFolder:
    """An ImageFolder with a one-line error for a missing or empty split folder or a corrupt
    image (see the module docstring: corrupt images fail, up front where the header shows it)."""
    if not root.is_dir():
        raise UserError(
            f"data folder {root} does not exist; --data-root must contain train/ and val/ "
            "in ImageFolder layout (one subfolder per class)"
        )
    try:
        folder = datasets.ImageFolder(str(root), transform=transform, loader=load_rgb)
    except (FileNotFoundError, RuntimeError) as exc:
        raise UserError(
            f"{root} is not an ImageFolder tree ({exc}); one subfolder per class"
        ) from exc
    key = (str(root.resolve()), len(folder.samples))
    if key not in _CHECKED:  # ImageNet's train/ is opened twice (train and held-out val)
        check_images((Path(path) for path, _ in folder.samples), root)
        _CHECKED.add(key)
    return folder


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
