"""Detection task: profiles `tiny` (generated COCO-format shapes, narrow SSD) and `paper`
(SSD300-VGG16 on COCO 2017). Metric: COCO mAP@[.5:.95] (primary), mAP@.5, mAP@.75."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from gapbench.errors import UserError
from gapbench.task import Task, TaskSetup, register_task
from tasks.detection.coco import CocoDetection, coco_map, collate, to_coco_results
from tasks.detection.models import build_ssd300, build_tiny_ssd, group_by_prefix, prunable_convs
from tasks.detection.synthetic import VERSION, write_synthetic


def _loss(model: nn.Module, batch) -> torch.Tensor:
    images, targets = batch
    return sum(model(images, targets).values())


def _forward(model: nn.Module, batch):
    images, targets = batch
    return model(images, targets) if model.training else model(images)


def _evaluate(model: nn.Module, loader) -> dict[str, float]:
    dataset: CocoDetection = loader.dataset
    detections = []
    for images, targets in loader:
        for target, output in zip(targets, model(images)):
            detections += to_coco_results(dataset, int(target["image_id"]), output)
    coco = dataset.coco
    if len(dataset) < len(coco.getImgIds()):  # a capped split: evaluate on the images used
        from pycocotools.coco import COCO

        sub = COCO()
        keep = set(dataset.image_ids)
        sub.dataset = {
            **coco.dataset,
            "images": [i for i in coco.dataset["images"] if i["id"] in keep],
            "annotations": [a for a in coco.dataset["annotations"] if a["image_id"] in keep],
        }
        sub.createIndex()
        coco = sub
    return coco_map(coco, detections)


@register_task("detection")
class DetectionTask(Task):
    description = (
        "object detection, COCO mAP; tiny: generated shapes + narrow SSD, paper: SSD300-VGG16 COCO"
    )
    metrics = ("mAP", "mAP50", "mAP75")

    def setup(self, profile, data_root, seed, device, batch_size=None, cache_dir=None) -> TaskSetup:
        if profile == "tiny":
            root = data_root or write_synthetic(
                (cache_dir or Path("results/cache/detection")) / f"shapes-v{VERSION}"
            )
            splits = {"train": ("train", True), "val": ("val", False), "test": ("test", False)}
            return self._setup_tiny(root, splits, batch_size)
        if data_root is None:
            raise UserError(
                "profile paper needs --data-root with annotations/instances_{train,val}2017.json and {train,val}2017/"
            )
        return self._setup_paper(data_root, batch_size, device)

    def _datasets(self, root: Path, splits: dict[str, tuple[str, bool]], max_images=None):
        return {
            key: CocoDetection(
                root / folder,
                root / "annotations" / f"instances_{folder}.json",
                train,
                max_images.get(key) if max_images else None,
            )
            for key, (folder, train) in splits.items()
        }

    def _loader(self, ds, batch_size, shuffle, workers=0):
        return DataLoader(
            ds, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, num_workers=workers
        )

    def _setup_tiny(self, root: Path, splits, batch_size) -> TaskSetup:
        ds = self._datasets(root, splits)
        num_classes = len(ds["train"].category_ids)
        model = build_tiny_ssd(num_classes)
        prunable = prunable_convs(model, dense=("backbone.body.0.0",))
        bs = batch_size or 32
        flops_batch = (
            [torch.zeros(3, 128, 128)],
            [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}],
        )
        return TaskSetup(
            model=model,
            train_loader=self._loader(ds["train"], bs, True),
            val_loader=self._loader(ds["val"], bs, False),
            test_loader=self._loader(ds["test"], bs, False),
            loss=_loss,
            evaluate=_evaluate,
            make_optimizer=lambda params: torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4),
            epochs=20,
            metric="mAP",
            dataset="generated COCO-format shapes (640/96/96 images, 128 px, 3 classes)",
            prunable=prunable,
            policy={
                "first_conv": "dense",
                "box_and_class_predictors": "dense",
                "backbone_and_extra_convs": "prunable",
            },
            partitions={
                3: group_by_prefix(
                    prunable,
                    [
                        ("backbone.body",),
                        ("backbone.extra1",),
                        ("backbone.extra2", "backbone.extra3"),
                    ],
                )
            },
            gap_defaults={"partitions": 3, "rounds": 2, "epochs_per_step": 2},
            method_defaults={"rigl": {"delta_t": 20}},
            lr_schedule="cosine",
            warmup_epochs=1,
            flops_batch=flops_batch,
            forward=_forward,
            flops_batch_size=1,
            grad_clip=10.0,
        )

    def _setup_paper(self, root: Path, batch_size, device) -> TaskSetup:
        # COCO has no public test labels: val2017 is the reported test split; validation for any
        # selection is the last 1000 training images' worth held out by id order (see README).
        splits = {
            "train": ("train2017", True),
            "val": ("train2017", False),
            "test": ("val2017", False),
        }
        ds = self._datasets(root, splits)
        train, val = ds["train"], ds["val"]
        held = max(1, min(1000, len(train.image_ids) // 20))
        train.image_ids, train.targets = (
            train.image_ids[:-held] or train.image_ids,
            train.targets[:-held] or train.targets,
        )
        val.image_ids, val.targets = val.image_ids[-held:], val.targets[-held:]
        num_classes = len(train.category_ids)
        model = build_ssd300(num_classes)
        prunable = prunable_convs(model, dense=("backbone.features.0",))
        bs = batch_size or 32
        workers = 0 if device.type == "cpu" else 8
        flops_batch = (
            [torch.zeros(3, 300, 300)],
            [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}],
        )
        return TaskSetup(
            model=model,
            train_loader=self._loader(train, bs, True, workers),
            val_loader=self._loader(val, bs, False, workers),
            test_loader=self._loader(ds["test"], bs, False, workers),
            loss=_loss,
            evaluate=_evaluate,
            # The SSD recipe: SGD momentum 0.9, wd 5e-4, lr 2e-3 per 32 images, warm-up, cosine.
            make_optimizer=lambda params: torch.optim.SGD(
                params, lr=2e-3 * bs / 32, momentum=0.9, weight_decay=5e-4
            ),
            epochs=120,  # C-GaP kappa=3: R=2 rounds x 3 x T=10 + F=60
            metric="mAP",
            dataset=f"COCO 2017 at {root} (test = val2017)",
            prunable=prunable,
            policy={
                "first_conv": "dense",
                "box_and_class_predictors": "dense",
                "backbone_and_extra_convs": "prunable",
            },
            partitions={
                3: group_by_prefix(
                    prunable,
                    [
                        ("backbone.features",),
                        ("backbone.extra.0",),
                        (
                            "backbone.extra.1",
                            "backbone.extra.2",
                            "backbone.extra.3",
                            "backbone.extra.4",
                        ),
                    ],
                ),
                2: group_by_prefix(prunable, [("backbone.features",), ("backbone.extra",)]),
            },
            gap_defaults={"partitions": 3, "rounds": 2, "epochs_per_step": 10},
            lr_schedule="cosine",
            warmup_epochs=1,
            flops_batch=flops_batch,
            forward=_forward,
            flops_batch_size=1,
        )
