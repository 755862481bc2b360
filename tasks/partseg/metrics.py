"""ShapeNet-part mIoU: per-shape IoU over the shape's own category parts, averaged two ways."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from tasks.partseg.categories import CATEGORIES, part_range

_NAMES = list(CATEGORIES)


def shape_iou(pred: np.ndarray, target: np.ndarray, category: str) -> float:
    """Mean IoU over the category's parts; a part absent from both prediction and truth scores 1."""
    ious = []
    for part in part_range(category):
        p, t = pred == part, target == part
        union = np.logical_or(p, t).sum()
        ious.append(1.0 if union == 0 else np.logical_and(p, t).sum() / union)
    return float(np.mean(ious))


class MIoU:
    """Accumulates shapes; instance mIoU averages over shapes, class mIoU over categories seen."""

    def __init__(self) -> None:
        self.per_cat: dict[str, list[float]] = defaultdict(list)

    def add(self, pred: np.ndarray, target: np.ndarray, category_index: int) -> None:
        name = _NAMES[category_index]
        self.per_cat[name].append(shape_iou(pred, target, name))

    def result(self) -> dict[str, float]:
        all_ious = [v for vals in self.per_cat.values() for v in vals]
        if not all_ious:
            return {"instance_mIoU": 0.0, "class_mIoU": 0.0}
        return {
            "instance_mIoU": float(np.mean(all_ious)),
            "class_mIoU": float(np.mean([np.mean(v) for v in self.per_cat.values()])),
        }
