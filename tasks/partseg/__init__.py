"""Part segmentation (ShapeNet-part layout) with PointNet++ SSG."""

from tasks.partseg import task  # noqa: F401  (registers "partseg")
