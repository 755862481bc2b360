"""COCO-format loading and evaluation (pycocotools, the code a COCO user trusts).

Handles what real COCO contains: non-contiguous category ids (mapped to labels 1..K, 0 is SSD's
background, and back for evaluation), iscrowd=1 annotations (not trained on; the evaluator treats
them as ignore regions), images without annotations, degenerate boxes (dropped and counted),
grayscale images (converted to RGB).

A missing or corrupt image fails the run, as in classification (tasks/classification/data.py): every
listed image's header is read when the split is opened, and a decoding error names the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import Dataset
from torchvision.transforms import functional as F

from gapbench.errors import UserError
from tasks.classification.data import check_images

log = logging.getLogger(__name__)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def _check_items(file: Path, doc: dict[str, Any], key: str, fields: dict[str, type]) -> None:
    """Each entry of doc[key] (a list) is an object whose `fields` have the given types."""
    for i, item in enumerate(doc[key]):
        if not isinstance(item, dict):
            raise UserError(
                f"annotation file {file}: {key}[{i}] is {type(item).__name__} {item!r:.40}, "
                "not an object; is this a COCO instances file?"
            )
        for name, kind in fields.items():
            if not isinstance(item.get(name), kind) or isinstance(item.get(name), bool):
                raise UserError(
                    f"annotation file {file}: {key}[{i}] (id {item.get('id')!r}) has no "
                    f"{kind.__name__} '{name}'"
                )


def _check_annotations(file: Path, doc: dict[str, Any]) -> None:
    image_ids = {img["id"] for img in doc["images"]}
    category_ids = {c["id"] for c in doc["categories"]}
    for i, ann in enumerate(doc["annotations"]):
        where = f"annotation file {file}: annotation #{i} (id {ann.get('id')})"
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
            raise UserError(f"{where} has no valid bbox [x, y, w, h] of 4 finite numbers")
        if ann.get("image_id") not in image_ids:
            raise UserError(f"{where} refers to unknown image_id {ann.get('image_id')!r}")
        if ann.get("category_id") not in category_ids:
            raise UserError(f"{where} refers to unknown category_id {ann.get('category_id')!r}")
        if ann.get("iscrowd", 0) not in (0, 1):
            raise UserError(f"{where} has iscrowd {ann.get('iscrowd')!r}; expected 0 or 1")
        if "area" in ann and not _is_number(ann["area"]):
            raise UserError(f"{where} has a non-numeric area {ann['area']!r}")
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", bbox[2] * bbox[3])


def _read_json(annotation_file: Path) -> dict[str, Any]:
    if not annotation_file.is_file():
        raise UserError(
            f"annotation file {annotation_file} does not exist; expected "
            f"{annotation_file.parent.name}/{annotation_file.name} under --data-root"
        )
    try:
        doc = json.loads(annotation_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"annotation file {annotation_file} is not valid JSON: {exc}") from exc
    except OSError as exc:
        raise UserError(f"cannot read annotation file {annotation_file}: {exc.strerror}") from None
    if not isinstance(doc, dict):
        raise UserError(f"annotation file {annotation_file} must hold a JSON object")
    return doc


def load_coco(annotation_file: Path) -> COCO:
    """Parse and validate an instances JSON; one clear error naming the file and the item."""
    doc = _read_json(annotation_file)
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise UserError(f"annotation file {annotation_file} has no '{key}' list")
    _check_items(annotation_file, doc, "images", {"id": int})
    _check_items(annotation_file, doc, "categories", {"id": int})
    _check_items(annotation_file, doc, "annotations", {"id": int})
    _check_annotations(annotation_file, doc)
    # Degenerate boxes (zero width or height) can be neither learned nor detected: drop them for
    # training and evaluation alike, and say how many.
    kept = [
        a for a in doc["annotations"] if a["iscrowd"] or (a["bbox"][2] > 0 and a["bbox"][3] > 0)
    ]
    dropped = len(doc["annotations"]) - len(kept)
    if dropped:
        log.warning(
            "%s: dropped %d degenerate boxes (zero width or height)", annotation_file, dropped
        )
    doc["annotations"] = kept
    coco = COCO()
    coco.dropped_degenerate = dropped
    coco.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class CocoDetection(Dataset):
    """Images and targets (boxes xyxy in pixels, labels 1..K) from a COCO split."""

    def __init__(
        self, image_dir: Path, annotation_file: Path, train: bool, max_images: int | None = None
    ):
        if not image_dir.is_dir():
            raise UserError(
                f"image folder {image_dir} does not exist; this profile expects "
                f"{image_dir.name}/ and annotations/{annotation_file.name} under --data-root"
            )
        self.coco = load_coco(annotation_file)
        self.image_dir = image_dir
        self.train = train
        self.category_ids = sorted(self.coco.getCatIds())
        self.label_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        self.category_of = {v: k for k, v in self.label_of.items()}
        self.image_ids = sorted(self.coco.getImgIds())[:max_images]
        check_images(self._image_paths(annotation_file), image_dir)  # corrupt: fail up front
        self.dropped_degenerate = self.coco.dropped_degenerate
        self.targets = [self._target(i) for i in self.image_ids]

    def _image_paths(self, annotation_file: Path) -> list[Path]:
        paths = []
        for info in self.coco.loadImgs(self.image_ids):
            if not isinstance(info.get("file_name"), str):
                raise UserError(
                    f"annotation file {annotation_file}: image id {info['id']} has no str "
                    "'file_name'"
                )
            paths.append(self.image_dir / info["file_name"])
        return paths

    def _target(self, image_id: int) -> dict[str, Any]:
        boxes, labels = [], []
        for ann in self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id])):
            if ann.get("iscrowd", 0):
                continue  # crowd regions are not objects to learn; COCOeval ignores matches there
            x, y, w, h = ann["bbox"]
            boxes.append([x, y, x + w, y + h])
            labels.append(self.label_of[ann["category_id"]])
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "image_id": torch.tensor(image_id),
        }

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int):
        info = self.coco.loadImgs([self.image_ids[index]])[0]
        path = self.image_dir / info["file_name"]
        try:
            image = Image.open(path).convert("RGB")  # grayscale and CMYK become RGB
        except OSError as exc:
            raise UserError(f"cannot read image {path}: {exc}") from exc
        target = {k: v.clone() for k, v in self.targets[index].items()}
        if self.train and torch.rand(()) < 0.5:  # horizontal flip, drawn from the seeded global RNG
            image = F.hflip(image)
            x0 = image.width - target["boxes"][:, 2]
            x1 = image.width - target["boxes"][:, 0]
            target["boxes"][:, 0], target["boxes"][:, 2] = x0, x1
        return F.to_tensor(image), target


def collate(batch):
    images, targets = zip(*batch)
    return list(images), list(targets)


def coco_map(coco_gt: COCO, detections: list[dict[str, Any]]) -> dict[str, float]:
    """COCO mAP@[.5:.95], mAP@.5, mAP@.75 (in percent) of `detections` (COCO result dicts)."""
    if not detections:
        return {"mAP": 0.0, "mAP50": 0.0, "mAP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.imgIds = sorted(
            {d["image_id"] for d in detections} | set(coco_gt.getImgIds())
        )
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.maximum(evaluator.stats[:3], 0.0)  # -1 means "no ground truth": count as 0
    return {
        "mAP": 100 * float(stats[0]),
        "mAP50": 100 * float(stats[1]),
        "mAP75": 100 * float(stats[2]),
    }


def to_coco_results(
    dataset: CocoDetection, image_id: int, output: dict[str, torch.Tensor]
) -> list[dict]:
    results = []
    for box, score, label in zip(
        output["boxes"].tolist(), output["scores"].tolist(), output["labels"].tolist()
    ):
        x0, y0, x1, y1 = box
        results.append(
            {
                "image_id": image_id,
                "category_id": dataset.category_of[int(label)],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(score),
            }
        )
    return results
