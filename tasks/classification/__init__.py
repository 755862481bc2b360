"""Image classification: ResNet-50 on ImageNet (paper) and a small ResNet on sklearn digits (tiny)."""

from tasks.classification.task import ClassificationTask

__all__ = ["ClassificationTask"]
