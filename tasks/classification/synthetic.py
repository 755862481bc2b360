"""The embedded classification set: generated "shapes-10", written as an ImageFolder tree.

sklearn's digits are real scans but too easy to tell sparse methods apart (every method lands
within a point of the others at 90% sparsity). This set is generated deterministically (numpy,
seeded) like the detection shapes: 10 classes = 5 shapes (circle, square, triangle, diamond,
cross) x 2 fills (solid, outline), each drawn with a random colour, size, position and rotation on
a noisy gradient background, with a smaller distractor shape of any class. Telling solid from
outline and the shape from a distractor under noise takes capacity, which is what a sparsity
benchmark needs. Images are drawn at 4x and downsampled (anti-aliased), saved as PNG.

Split sizes (images per class) are a parameter: the default 500/50/200 is the set the shipped
records read (folder `shapes10-v2`); any other sizes are another data set, in a folder named by
its sizes (`shapes10-v2-1200-100-300`), since every image after the first changes with them.
"""

from __future__ import annotations

import colorsys
import json
import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from gapbench.task import generate_once

VERSION = 2
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
FILLS = ("solid", "outline")
CLASSES = [f"{shape}-{fill}" for shape in SHAPES for fill in FILLS]
SPLITS = {"train": 500, "val": 50, "test": 200}  # images per class (the v2 records' set)
SIZE = 20
SCALE = 4  # drawing supersampling


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        pts = [(x * r * 0.8, y * r * 0.8) for x, y in corners]
    elif shape == "triangle":
        pts = [
            (r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        ]
    elif shape == "diamond":
        pts = [(0, -r), (r * 0.65, 0), (0, r), (-r * 0.65, 0)]
    else:  # cross: a plus sign of width r/2.5
        w = r / 2.5
        pts = [
            (-w, -r),
            (w, -r),
            (w, -w),
            (r, -w),
            (r, w),
            (w, w),
            (w, r),
            (-w, r),
            (-w, w),
            (-r, w),
            (-r, -w),
            (-w, -w),
        ]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _draw(draw: ImageDraw.ImageDraw, shape: str, fill: str, cx, cy, r, angle, colour) -> None:
    width = max(2, int(r / 3.5))
    if shape == "circle":
        box = [cx - r, cy - r, cx + r, cy + r]
        if fill == "solid":
            draw.ellipse(box, fill=colour)
        else:
            draw.ellipse(box, outline=colour, width=width)
        return
    pts = _polygon(shape, cx, cy, r, angle)
    if fill == "solid":
        draw.polygon(pts, fill=colour)
    else:
        draw.line([*pts, pts[0]], fill=colour, width=width, joint="curve")


def _colour(rng: np.random.Generator, light: bool) -> tuple[int, int, int]:
    value = rng.uniform(0.65, 1.0) if not light else rng.uniform(0.1, 0.45)
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.5, 1.0), value)
    return int(r * 255), int(g * 255), int(b * 255)


def render(label: int, rng: np.random.Generator) -> Image.Image:
    """One image of class `label`."""
    big = SIZE * SCALE
    light = bool(rng.uniform() < 0.5)
    base = rng.uniform(150, 230) if light else rng.uniform(10, 90)
    gx, gy = rng.uniform(-40, 40, 2)
    yy, xx = np.mgrid[0:big, 0:big] / big
    background = base + gx * (xx - 0.5) + gy * (yy - 0.5)
    tint = rng.uniform(-20, 20, 3)
    canvas = np.clip(background[..., None] + tint, 0, 255).astype(np.uint8)
    image = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(image)
    # A distractor first (smaller, any shape and fill), then the object that names the class.
    d_shape, d_fill = rng.integers(len(SHAPES)), rng.integers(len(FILLS))
    dr = rng.uniform(0.12, 0.2) * big
    dx, dy = rng.uniform(dr, big - dr, 2)
    _draw(
        draw,
        SHAPES[d_shape],
        FILLS[d_fill],
        dx,
        dy,
        dr,
        rng.uniform(0, 2 * math.pi),
        _colour(rng, light),
    )
    shape, fill = SHAPES[label // len(FILLS)], FILLS[label % len(FILLS)]
    r = rng.uniform(0.25, 0.42) * big
    cx, cy = rng.uniform(r, big - r, 2)
    _draw(draw, shape, fill, cx, cy, r, rng.uniform(0, 2 * math.pi), _colour(rng, light))
    small = np.asarray(image.resize((SIZE, SIZE), Image.Resampling.LANCZOS), dtype=np.float32)
    small += rng.normal(0, 12, small.shape)  # sensor noise after downsampling
    return Image.fromarray(np.clip(small, 0, 255).astype(np.uint8), "RGB")


def folder_name(splits: dict[str, int] | None = None) -> str:
    """The cache folder of the set with these split sizes (images per class)."""
    splits = splits or SPLITS
    if splits == SPLITS:
        return f"shapes10-v{VERSION}"
    return f"shapes10-v{VERSION}-" + "-".join(str(splits[s]) for s in ("train", "val", "test"))


def ensure_shapes(cache_dir: Path, seed: int = 0, splits: dict[str, int] | None = None) -> Path:
    """Write the set once into cache_dir (ImageFolder: split/class/NNNNN.png); a marker file
    records completion, so an interrupted write is redone, never half-read. `splits`: images
    per class of train, val and test (default SPLITS)."""
    splits = dict(splits or SPLITS)
    if set(splits) != set(SPLITS) or min(splits.values()) < 1:
        raise ValueError(f"splits needs train, val and test counts >= 1, got {splits}")
    root = Path(cache_dir) / folder_name(splits)
    return generate_once(root, (root / "COMPLETE.json").exists, lambda: _write(root, seed, splits))


def _write(root: Path, seed: int, splits: dict[str, int]) -> None:
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for split_index, split in enumerate(SPLITS):  # fixed split order: the RNG streams
        per_class = splits[split]
        rng = np.random.default_rng([seed, VERSION, split_index])
        for label, name in enumerate(CLASSES):
            folder = tmp / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                render(label, rng).save(folder / f"{i:05d}.png")
    (tmp / "COMPLETE.json").write_text(
        json.dumps({"version": VERSION, "classes": CLASSES, "per_class": splits, "size": SIZE})
    )
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
