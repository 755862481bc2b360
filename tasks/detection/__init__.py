"""Object detection: SSD on COCO-format data (pycocotools mAP)."""

from tasks.detection.task import DetectionTask

__all__ = ["DetectionTask"]
