"""Detection: profiles `tiny` (quick default) and `bench` (the shipped board) on generated
COCO-format shapes with a narrow SSD, and `paper` (SSD300-VGG16 on COCO 2017). Metric: COCO
mAP@[.5:.95] (primary), mAP@.5, mAP@.75, by pycocotools."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gapbench.errors import UserError
from gapbench.registry import register_task
from gapbench.task import (
    BuildRequest,
    LrSchedule,
    OptimizerRecipe,
    Profile,
    Task,
    Workload,
    make_loader,
)
from tasks.detection.coco import CocoDetection, coco_map, collate, to_coco_results
from tasks.detection.models import build_ssd300, build_tiny_ssd
from tasks.detection.synthetic import IMAGE_SIZES, VERSIONS, write_synthetic

# tiny and paper keep the SSD heads (box and class predictors) dense, the task's choice, recorded;
# backbone and extra-layer convs are prunable, the first conv dense by default (`--dense-layers`).
# There "90%" is 0.364 density over conv+linear (the heads are 29% of the tiny SSD's weights).
HEADS = ("head",)


def _shapes(version: int) -> str:
    sizes = "/".join(str(n) for n in VERSIONS[version].values())
    return f"generated COCO-format shapes v{version} ({sizes} images, {IMAGE_SIZES[version]} px, 3 classes)"


PROFILES = {
    # The quick default (dense, magnitude and gap in about a minute and a half on 2 cores): 120
    # updates, far from converged; the board is `bench`.
    "tiny": Profile(
        name="tiny",
        epochs=3,
        batch_size=16,
        optimizer=OptimizerRecipe("adamw", lr=2e-3, weight_decay=1e-4),
        lr_schedule=LrSchedule("cosine", warmup_epochs=0.25),
        dataset=_shapes(1),
        grad_clip=10.0,
        dense_layers="first",
        exclude=HEADS,
        partitions={
            3: (("backbone.body",), ("backbone.extra1",), ("backbone.extra2", "backbone.extra3")),
            2: (("backbone.body", "backbone.extra1"), ("backbone.extra2", "backbone.extra3")),
        },
        method_defaults={
            "gap": {"partitions": 2, "rounds": 1, "epochs_per_step": 1, "finetune": 1},
            "rigl": {"delta_frac": 0.05},
            "set[variant=rigl]": {"delta_frac": 0.05},
        },
        options={"image_size": IMAGE_SIZES[1], "data_version": 1, "headline_sparsity": 0.9},
    ),
    # The board: 6400/200/500 images of 64 px (v4; a step costs about 1/3 of 128 px, and v3's
    # 1600 training images overfit a run long enough to converge), 400 updates an epoch, 11
    # epochs. The heads are pruned too, so the sparsity is that of every conv (the first one
    # aside): with dense heads, the heads' weights would carry most of what a 90% model keeps and
    # blur the methods' differences. Warm-up 1 of 11 epochs; GaP kappa=3 (body + first extra |
    # later extras | heads), R=3, T=1 epoch (400 steps) per grow phase, F=2 (18%); GMP reaches
    # its target at 60% (cosine LR 0.35x peak there, 40% of the run left); RigL's dT 5% of the
    # run (16 updates before T_end); SET rewires after each of 10 epochs.
    "bench": Profile(
        name="bench",
        epochs=11,
        batch_size=16,
        optimizer=OptimizerRecipe("adamw", lr=2e-3, weight_decay=1e-4),
        lr_schedule=LrSchedule("cosine", warmup_epochs=1),
        dataset=_shapes(4),
        grad_clip=10.0,
        dense_layers="first",
        exclude=(),
        partitions={
            3: (
                ("backbone.body", "backbone.extra1"),
                ("backbone.extra2", "backbone.extra3"),
                HEADS,
            ),
            2: (("backbone",), HEADS),
        },
        method_defaults={
            "gap": {"partitions": 3, "rounds": 3, "epochs_per_step": 1, "finetune": 2},
            "magnitude": {"end": 0.6},
            "rigl": {"delta_frac": 0.05},
            "set[variant=rigl]": {"delta_frac": 0.05},
        },
        options={"image_size": IMAGE_SIZES[4], "data_version": 4, "headline_sparsity": 0.9},
    ),
    # The SSD recipe: SGD momentum 0.9, wd 5e-4, lr 2e-3 per 32 images, warm-up, cosine; C-GaP
    # kappa=3, R=2, T=10, F=60 (120 epochs).
    "paper": Profile(
        name="paper",
        epochs=120,
        batch_size=32,
        optimizer=OptimizerRecipe(
            "sgd", lr=2e-3, momentum=0.9, weight_decay=5e-4, reference_batch=32
        ),
        lr_schedule=LrSchedule("cosine", warmup_epochs=1),
        dataset="COCO 2017 (test = val2017)",
        needs_data_root=True,
        dense_layers="first",
        exclude=HEADS,
        partitions={
            3: (
                ("backbone.features",),
                ("backbone.extra.0",),
                ("backbone.extra.1", "backbone.extra.2", "backbone.extra.3", "backbone.extra.4"),
            ),
            2: (("backbone.features",), ("backbone.extra",)),
        },
        method_defaults={
            "gap": {"partitions": 3, "rounds": 2, "epochs_per_step": 10, "finetune": 60}
        },
        options={"image_size": 300},
    ),
}


def loss(model: nn.Module, batch) -> torch.Tensor:
    images, targets = batch
    return sum(model(images, targets).values())


def forward(model: nn.Module, batch):
    images, targets = batch
    return model(images, targets) if model.training else model(images)


def evaluate(model: nn.Module, loader) -> dict[str, float]:
    dataset: CocoDetection = loader.dataset
    detections = []
    for images, targets in loader:
        for target, output in zip(targets, model(images)):
            detections += to_coco_results(dataset, int(target["image_id"]), output)
    coco = dataset.coco
    if len(dataset) < len(coco.getImgIds()):  # a held-out part of a split: evaluate on it alone
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


def _split(root: Path, folder: str, train: bool) -> CocoDetection:
    return CocoDetection(root / folder, root / "annotations" / f"instances_{folder}.json", train)


@register_task("detection")
class DetectionTask(Task):
    description = (
        "object detection, COCO mAP; tiny: generated shapes + narrow SSD, paper: SSD300-VGG16 COCO"
    )
    metrics = ("mAP", "mAP50", "mAP75")
    profiles = PROFILES

    def build(self, profile: Profile, request: BuildRequest) -> Workload:
        if not profile.needs_data_root:
            version = profile.options["data_version"]
            root = request.data_root or write_synthetic(
                request.cache_dir / f"shapes-v{version}", version=version
            )
            train, val, test = (
                _split(root, "train", True),
                _split(root, "val", False),
                _split(root, "test", False),
            )
            model = build_tiny_ssd(len(train.category_ids), IMAGE_SIZES[version])
        else:
            root = request.data_root
            if root is None:
                raise UserError(
                    "profile paper needs --data-root with annotations/instances_{train,val}2017.json and {train,val}2017/"
                )
            # COCO has no public test labels: val2017 is the reported test split; the last 5% of
            # train2017 (at most 1000 images) is held out as validation.
            train, val = _split(root, "train2017", True), _split(root, "train2017", False)
            test = _split(root, "val2017", False)
            held = max(1, min(1000, len(train.image_ids) // 20))
            train.image_ids, train.targets = train.image_ids[:-held], train.targets[:-held]
            val.image_ids, val.targets = val.image_ids[-held:], val.targets[-held:]
            model = build_ssd300(len(train.category_ids))
        size = profile.options["image_size"]
        empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
        return Workload(
            model=model,
            train_loader=make_loader(train, request, shuffle=True, collate_fn=collate),
            val_loader=make_loader(val, request, shuffle=False, collate_fn=collate, shard=False),
            test_loader=make_loader(test, request, shuffle=False, collate_fn=collate, shard=False),
            loss=loss,
            evaluate=evaluate,
            forward=forward,
            example_batch=([torch.zeros(3, size, size)], [empty]),
            samples=lambda batch: len(batch[0]),  # a list of images
            dataset=profile.dataset if request.data_root is None else f"COCO at {root}",
        )
