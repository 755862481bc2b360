"""Classification: profiles `tiny` and `bench` (generated shapes-10), `digits` (sklearn digits,
embedded) and `paper` (ResNet-50, ImageNet)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset
from torchvision import transforms

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
from tasks.classification.data import (
    DIGITS_VERSION,
    check_same_classes,
    ensure_digits,
    image_folder,
)
from tasks.classification.memory import InMemoryImages
from tasks.classification.models import TinyResNet, build_resnet50
from tasks.classification.synthetic import VERSION as SHAPES_VERSION
from tasks.classification.synthetic import ensure_shapes

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_SMALL = dict(
    batch_size=64,
    optimizer=OptimizerRecipe("sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    lr_schedule=LrSchedule("cosine", warmup_epochs=1),
    dense_layers="first",
    method_defaults={
        "gap": {"partitions": 3, "rounds": 2, "epochs_per_step": 2},
        # A few dozen steps per epoch: RigL's ImageNet interval would allow no update at all.
        "rigl": {"delta_t": 20, "delta_t_batch": 64},
        "set[variant=rigl]": {"delta_t": 20, "delta_t_batch": 64},
    },
)

# The ResNet both shapes profiles train: two basic blocks per stage, 16/32/64 channels, stride-2
# stem (175k parameters); what the shipped records ran.
_SHAPES_MODEL = {"image_size": 20, "data": "shapes", "stem_stride": 2, "widths": (16, 32, 64),
                 "blocks": 2}  # fmt: skip
TINY_SPLITS = {"train": 250, "val": 50, "test": 200}  # images per class
BENCH_SPLITS = {"train": 1200, "val": 100, "test": 300}


def _shapes_dataset(splits: dict[str, int]) -> str:
    sizes = "/".join(str(10 * splits[s]) for s in ("train", "val", "test"))
    return f"generated shapes-10 v{SHAPES_VERSION} ({sizes} images, 20 px, ImageFolder)"


SMALL_MEAN, SMALL_STD = (0.5,) * 3, (0.5,) * 3
CROP_PADDING = 2


def _folder_splits(root: Path, size: int, flip: bool) -> tuple[Dataset, Dataset, Dataset]:
    """train/val/test ImageFolders read through PIL: resize, random crop (padding 2) and, on
    shapes, a random horizontal flip for training; resize only for evaluation."""
    norm = transforms.Normalize(SMALL_MEAN, SMALL_STD)
    train_tf = transforms.Compose(
        [
            transforms.Resize(size),
            transforms.RandomCrop(size, padding=CROP_PADDING),
            *([transforms.RandomHorizontalFlip()] if flip else []),
            transforms.ToTensor(),
            norm,
        ]
    )
    eval_tf = transforms.Compose([transforms.Resize(size), transforms.ToTensor(), norm])
    return (
        image_folder(root / "train", train_tf),
        image_folder(root / "val", eval_tf),
        image_folder(root / "test", eval_tf),
    )


def _embedded_splits(root: Path, size: int, flip: bool) -> tuple[Dataset, Dataset, Dataset]:
    """The same splits, samples bit-identical to `_folder_splits`', held in memory."""
    train = InMemoryImages(
        image_folder(root / "train", None), size, SMALL_MEAN, SMALL_STD, CROP_PADDING, flip
    )
    val, test = (
        InMemoryImages(image_folder(root / split, None), size, SMALL_MEAN, SMALL_STD)
        for split in ("val", "test")
    )
    return train, val, test


PROFILES = {
    # The quick default (a grid of three runs in about a minute on one core): the bench model on
    # a quarter of its data for 8 epochs; GaP kappa=3, R=2, T=1, F=2. A smoke test of the
    # pipeline and a first look, not a board: see `bench`.
    "tiny": Profile(
        name="tiny",
        epochs=8,
        batch_size=32,  # twice the steps of batch 64 at the same cost: 632 steps
        optimizer=_SMALL["optimizer"],
        lr_schedule=_SMALL["lr_schedule"],
        dataset=_shapes_dataset(TINY_SPLITS),
        dense_layers="first",
        method_defaults={
            "gap": {"partitions": 3, "rounds": 2, "epochs_per_step": 1},
            "rigl": {"delta_t": 20, "delta_t_batch": 64},
            "set[variant=rigl]": {"delta_t": 20, "delta_t_batch": 64},
        },
        options={**_SHAPES_MODEL, "splits": TINY_SPLITS},
    ),
    # The board: a budget at which dense has converged (2x the epochs is within a point) and
    # each method's schedule is its own in miniature. 12000 training images, 188 steps per
    # epoch, 15 epochs (2820 steps), 1 warm-up epoch (7%). GaP kappa=3, R=4, T=1, F=3: every
    # grow phase 188 steps, fine-tune 20% (paper: R=7, 15%). GMP reaches its target at 60%
    # of the run, leaving 40% to recover at >= 0.35x peak LR. RigL/SET(rigl) update every 100
    # steps (RigL's CIFAR interval) -> 22 updates before T_end; SET (original) rewires 14 times.
    # Seed 0: dense 98.40 (30 epochs: 99.27), GaP at the 90% headline 91.43.
    "bench": Profile(
        name="bench",
        epochs=15,
        dataset=_shapes_dataset(BENCH_SPLITS),
        options={**_SHAPES_MODEL, "splits": BENCH_SPLITS, "headline_sparsity": 0.9},
        batch_size=64,
        optimizer=_SMALL["optimizer"],
        lr_schedule=_SMALL["lr_schedule"],
        dense_layers="first",
        method_defaults={
            # F = the rest of the budget (3 epochs), so --multiplier and FLOPs-matched budgets
            # stretch it; P-GaP: R x T + F per worker.
            "gap": {"partitions": 3, "rounds": 4, "epochs_per_step": 1},
            "gap[mode=parallel]": {"finetune": 3},
            "magnitude": {"end": 0.6},
            "rigl": {"delta_t": 100, "delta_t_batch": 64},
            "set[variant=rigl]": {"delta_t": 100, "delta_t_batch": 64},
        },
    ),
    # sklearn's bundled handwritten digits (real scans): easy, every method close to dense.
    "digits": Profile(
        name="digits",
        epochs=20,
        dataset=f"sklearn digits v{DIGITS_VERSION} (1797 scans, ImageFolder, 60/20/20 stratified)",
        options={"image_size": 16, "data": "digits"},
        **_SMALL,
    ),
    # ResNet-50 on ImageNet; GaP C-GaP kappa=4, R=7, T=30, F=150 (990 epochs; GAP_SPEC.md), P-GaP
    # 8 rounds. Partitions: consecutive, balanced by parameter count (by-stage groups differ 70x
    # in size; the paper's ResNet rule is not in its public code). First conv dense under
    # uniform, sparse under ERK, classifier pruned: RigL's released ImageNet runs.
    "paper": Profile(
        name="paper",
        epochs=990,
        batch_size=256,
        optimizer=OptimizerRecipe(
            "sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, reference_batch=256
        ),
        lr_schedule=LrSchedule("cosine", warmup_epochs=5),
        dataset="ImageNet (ImageFolder: train/, val/ = test split)",
        needs_data_root=True,
        dense_layers={"erk": "none", "default": "first"},
        method_defaults={
            "gap": {"partitions": 4, "rounds": 7, "epochs_per_step": 30, "finetune": 150},
            "gap[mode=parallel]": {"rounds": 8, "finetune": 150},
            # GraSP's ImageNet pruner (GraSP_ImageNet.py): one image per class, scored in
            # chunks of 20 (10 per class over 1000 classes would not fit a second backward).
            "grasp": {"samples_per_class": 1, "parts": 50},
        },
        options={"image_size": 224},
    ),
}


def tiny_resnet(classes: int, profile: Profile) -> TinyResNet:
    """The embedded profiles' model, built from exactly what the profile declares."""
    o = profile.options
    return TinyResNet(
        classes,
        widths=tuple(o.get("widths", (16, 32, 64))),
        stem_stride=o.get("stem_stride", 1),
        blocks=o.get("blocks", 2),
    )


def top1(model: nn.Module, loader) -> dict[str, float]:
    correct = total = 0
    for images, labels in loader:
        pred = model(images).argmax(1)
        correct += int((pred == labels).sum())
        total += labels.numel()
    return {"top1": 100.0 * correct / max(1, total)}


def forward(model: nn.Module, batch) -> torch.Tensor:
    return model(batch[0])


_criterion = nn.CrossEntropyLoss(label_smoothing=0.1)


def loss(model: nn.Module, batch) -> torch.Tensor:
    images, labels = batch
    return _criterion(model(images), labels)


def tempered_loss(model: nn.Module, batch, temperature: float) -> torch.Tensor:
    """Cross-entropy of logits / T, no label smoothing: the loss GraSP's reference scores with."""
    images, labels = batch
    return nn.functional.cross_entropy(model(images) / temperature, labels)


def class_batch(loader, classes: int, per_class: int):
    """GraSP's reference probe data (pruner/GraSP.py GraSP_fetch_data): the first `per_class`
    samples of every class met in the shuffled training loader, ordered by class."""
    found: list[list[torch.Tensor]] = [[] for _ in range(classes)]
    for images, labels in loader:
        for i, label in enumerate(labels.tolist()):
            if len(found[label]) < per_class:
                found[label].append(images[i : i + 1])
        if all(len(f) == per_class for f in found):
            break
    present = [c for c in range(classes) if found[c]]
    images = torch.cat([x for c in present for x in found[c]])
    labels = torch.cat([torch.full((len(found[c]),), c, dtype=torch.long) for c in present])
    return images, labels


@register_task("classification")
class ClassificationTask(Task):
    description = "image classification; tiny, bench: generated shapes-10, digits: sklearn digits, paper: ResNet-50"
    metrics = ("top1",)
    profiles = PROFILES

    def build(self, profile: Profile, request: BuildRequest) -> Workload:
        if profile.name != "paper":
            if request.data_root is not None:
                root = request.data_root
            elif profile.options["data"] == "shapes":
                root = ensure_shapes(request.cache_dir, splits=profile.options["splits"])
            else:
                root = ensure_digits(request.cache_dir)
            size = profile.options["image_size"]
            shapes = profile.options["data"] == "shapes"
            if request.data_root is None:  # embedded: a few MB, decoded once (see memory.py)
                train, val, test = _embedded_splits(root, size, flip=shapes)
            else:
                train, val, test = _folder_splits(root, size, flip=shapes)
            check_same_classes(train, val, root / "val")
            check_same_classes(train, test, root / "test")
            model = tiny_resnet(len(train.classes), profile)
        else:
            root = request.data_root
            if root is None:
                raise UserError(
                    "profile paper needs --data-root pointing at ImageNet (train/ and val/)"
                )
            train, val, test = self._imagenet(root)
            model = build_resnet50(len(train.dataset.classes))
        size = profile.options["image_size"]
        train_loader = make_loader(train, request, shuffle=True)
        classes = len(getattr(train, "classes", None) or train.dataset.classes)
        return Workload(
            model=model,
            train_loader=train_loader,
            val_loader=make_loader(val, request, shuffle=False, shard=False),
            test_loader=make_loader(test, request, shuffle=False, shard=False),
            loss=loss,
            evaluate=top1,
            forward=forward,
            example_batch=(torch.zeros(1, 3, size, size), torch.zeros(1, dtype=torch.long)),
            dataset=profile.dataset if request.data_root is None else f"ImageFolder at {root}",
            tempered_loss=tempered_loss,
            class_batch=partial(class_batch, train_loader, classes),
        )

    @staticmethod
    def _imagenet(root):
        norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        train_tf = transforms.Compose(
            [
                transforms.RandomResizedCrop(224),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                norm,
            ]
        )
        eval_tf = transforms.Compose(
            [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), norm]
        )
        train_all = image_folder(root / "train", train_tf)
        test = image_folder(root / "val", eval_tf)
        check_same_classes(train_all, test, root / "val")
        # Validation (for any selection) = every 100th training image, held out from training;
        # ImageNet's val/ folder is the test split reported in the leaderboard.
        held = set(range(0, len(train_all), 100))
        train = Subset(train_all, [i for i in range(len(train_all)) if i not in held])
        val = Subset(image_folder(root / "train", eval_tf), sorted(held))
        return train, val, test
