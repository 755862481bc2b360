"""COCO-format loading and evaluation (pycocotools, the code a COCO user trusts).

Handles what real COCO contains: non-contiguous category ids (mapped to labels 1..K, 0 is SSD's
background, and back for evaluation), iscrowd=1 annotations (not trained on; the evaluator treats
them as ignore regions), images without annotations, degenerate boxes (dropped and counted),
grayscale images (converted to RGB).
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

log = logging.getLogger(__name__)


def load_coco(annotation_file: Path) -> COCO:
    """Parse and validate an instances JSON; one clear error naming the file on any problem."""
    if not annotation_file.is_file():
        raise UserError(
            f"annotation file {annotation_file} does not exist; expected COCO layout annotations/instances_<split>.json"
        )
    try:
        doc = json.loads(annotation_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"annotation file {annotation_file} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise UserError(f"annotation file {annotation_file} must hold a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise UserError(f"annotation file {annotation_file} has no '{key}' list")
    image_ids = {img.get("id") for img in doc["images"]}
    category_ids = {c.get("id") for c in doc["categories"]}
    for i, ann in enumerate(doc["annotations"]):
        bbox = ann.get("bbox")
        if not (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, int | float) for v in bbox)
        ):
            raise UserError(
                f"annotation file {annotation_file}: annotation #{i} (id {ann.get('id')}) has no valid bbox [x, y, w, h]"
            )
        if ann.get("image_id") not in image_ids:
            raise UserError(
                f"annotation file {annotation_file}: annotation #{i} refers to unknown image_id {ann.get('image_id')}"
            )
        if ann.get("category_id") not in category_ids:
            raise UserError(
                f"annotation file {annotation_file}: annotation #{i} refers to unknown category_id {ann.get('category_id')}"
            )
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", bbox[2] * bbox[3])
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
                f"image folder {image_dir} does not exist; expected COCO layout <split>2017/"
            )
        self.coco = load_coco(annotation_file)
        self.image_dir = image_dir
        self.train = train
        self.category_ids = sorted(self.coco.getCatIds())
        self.label_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        self.category_of = {v: k for k, v in self.label_of.items()}
        self.image_ids = sorted(self.coco.getImgIds())[:max_images]
        self.dropped_degenerate = self.coco.dropped_degenerate
        self.targets = [self._target(i) for i in self.image_ids]

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
