"""The embedded detection data set: coloured shapes on textured backgrounds, written as real COCO
(JSON + JPEG files) so the same loader reads it as COCO 2017.

Category ids are deliberately non-contiguous (like COCO's 1..90 with gaps); objects vary in colour,
size and position, some overlap and some touch the border; a few images have no objects.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from gapbench.task import generate_once

CATEGORIES = [
    {"id": 3, "name": "rectangle", "supercategory": "shape"},
    {"id": 7, "name": "ellipse", "supercategory": "shape"},
    {"id": 12, "name": "triangle", "supercategory": "shape"},
]
# Version -> split sizes. A new version whenever the content changes: the folder and the profile's
# `dataset` name carry it, so records never mix two sets under one name.
VERSIONS: dict[int, dict[str, int]] = {
    1: {"train": 640, "val": 96, "test": 96},  # tiny
    2: {"train": 1600, "val": 200, "test": 500},  # 128 px, >= 500 test images
    3: {"train": 1600, "val": 200, "test": 500},  # 64 px (a step costs 1/3.3 of 128 px)
    4: {"train": 6400, "val": 200, "test": 500},  # bench: 64 px, 4x the images (v3 overfit)
}
# Version -> image side in pixels (objects are 15-50% of it).
IMAGE_SIZES: dict[int, int] = {1: 128, 2: 128, 3: 64, 4: 64}
VERSION = 1  # the tiny profile's
SPLITS = VERSIONS[VERSION]


def _draw_object(
    draw: ImageDraw.ImageDraw, kind: str, box: tuple[float, float, float, float], colour
) -> None:
    x0, y0, x1, y1 = box
    if kind == "rectangle":
        draw.rectangle(box, fill=colour)
    elif kind == "ellipse":
        draw.ellipse(box, fill=colour)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)


def _image(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[dict]]:
    base = rng.integers(40, 200, 3)
    noise = rng.normal(0, 12, (size, size, 3))
    img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    objects = []
    n = int(rng.choice([0, 1, 2, 3, 4], p=[0.05, 0.3, 0.3, 0.2, 0.15]))
    for _ in range(n):
        cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        w, h = rng.uniform(0.15, 0.5, 2) * size
        # Allow objects to run off the border: clip their boxes to the image like COCO does.
        x0, y0 = rng.uniform(-0.1 * w, size - 0.9 * w), rng.uniform(-0.1 * h, size - 0.9 * h)
        box = (x0, y0, x0 + w, y0 + h)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        _draw_object(draw, cat["name"], box, colour)
        cx0, cy0 = max(0.0, x0), max(0.0, y0)
        cx1, cy1 = min(float(size), x0 + w), min(float(size), y0 + h)
        objects.append({"category_id": cat["id"], "bbox": [cx0, cy0, cx1 - cx0, cy1 - cy0]})
    return img, objects


def write_synthetic(root: Path, seed: int = 0, version: int = VERSION) -> Path:
    """Generate data set `version` into `root` (once); returns root. Layout:
    annotations/instances_<split>.json and <split>/<id>.jpg, the COCO 2017 layout with a test
    split added."""
    return generate_once(
        root, (root / "COMPLETE").exists, lambda: _write(root, IMAGE_SIZES[version], seed, version)
    )


def _write(root: Path, size: int, seed: int, version: int) -> None:
    splits = VERSIONS[version]
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "annotations").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    image_id = ann_id = 0
    for split, count in splits.items():
        (tmp / split).mkdir()
        images, annotations = [], []
        for _ in range(count):
            image_id += 1
            img, objects = _image(rng, size)
            name = f"{image_id:012d}.jpg"
            img.save(tmp / split / name, quality=92)
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
            for obj in objects:
                ann_id += 1
                w, h = obj["bbox"][2], obj["bbox"][3]
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": obj["category_id"],
                        "bbox": [round(v, 2) for v in obj["bbox"]],
                        "area": round(w * h, 2),
                        "iscrowd": 0,
                    }
                )
        doc = {"images": images, "annotations": annotations, "categories": CATEGORIES}
        (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    (tmp / "COMPLETE").write_text(json.dumps({"version": version, "splits": splits, "size": size}))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
