"""Classification task: profiles `tiny` (sklearn digits, embedded) and `paper` (ResNet-50, ImageNet)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

from gapbench.errors import UserError
from gapbench.task import Task, TaskSetup, register_task
from tasks.classification.data import check_same_classes, ensure_digits, image_folder
from tasks.classification.models import TinyResNet, build_resnet50, stage_partitions

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def top1(model: nn.Module, loader) -> dict[str, float]:
    correct = total = 0
    for images, labels in loader:
        pred = model(images).argmax(1)
        correct += int((pred == labels).sum())
        total += labels.numel()
    return {"top1": 100.0 * correct / max(1, total)}


def _forward(model: nn.Module, batch) -> torch.Tensor:
    return model(batch[0])


def _prunable(model: nn.Module) -> list[str]:
    """Conv and linear weights, except the stem conv and the classifier (kept dense, as in RigL)."""
    names = []
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear) and mod_name not in ("conv1", "fc"):
            names.append(f"{mod_name}.weight")
    return names


POLICY = {"first_conv": "dense", "classifier": "dense", "downsample_convs": "prunable"}


@register_task("classification")
class ClassificationTask(Task):
    description = (
        "image classification; tiny: sklearn digits + small ResNet, paper: ResNet-50 ImageNet"
    )
    metrics = ("top1",)

    def setup(self, profile, data_root, seed, device, batch_size=None, cache_dir=None) -> TaskSetup:
        if profile == "tiny":
            return self._tiny(data_root, batch_size, cache_dir)
        return self._paper(data_root, batch_size, device)

    def _loaders(self, train, val, test, batch_size: int, workers: int):
        def make(ds, shuffle):
            return DataLoader(
                ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers, drop_last=False
            )

        return make(train, True), make(val, False), make(test, False)

    def _tiny(
        self, data_root: Path | None, batch_size: int | None, cache_dir: Path | None
    ) -> TaskSetup:
        root = data_root or ensure_digits(cache_dir or Path("results/cache/classification"))
        norm = transforms.Normalize((0.5,) * 3, (0.5,) * 3)
        train_tf = transforms.Compose(
            [
                transforms.Resize(16),
                transforms.RandomCrop(16, padding=2),
                transforms.ToTensor(),
                norm,
            ]
        )
        eval_tf = transforms.Compose([transforms.Resize(16), transforms.ToTensor(), norm])
        train = image_folder(root / "train", train_tf)
        val = image_folder(root / "val", eval_tf)
        test = image_folder(root / "test", eval_tf)
        check_same_classes(train, val, root / "val")
        check_same_classes(train, test, root / "test")
        model = TinyResNet(num_classes=len(train.classes))
        prunable = _prunable(model)
        bs = batch_size or 64
        train_loader, val_loader, test_loader = self._loaders(train, val, test, bs, 0)
        flops_images = torch.zeros(1, 3, 16, 16)
        return TaskSetup(
            model=model,
            train_loader=train_loader,
            val_loader=val_loader,
            test_loader=test_loader,
            loss=_make_loss(0.1),
            evaluate=top1,
            make_optimizer=lambda params: torch.optim.SGD(
                params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
            ),
            epochs=20,
            metric="top1",
            dataset="sklearn digits (1797 scans, ImageFolder, 60/20/20 stratified)",
            prunable=prunable,
            policy=POLICY,
            partitions={3: stage_partitions(model, prunable, ["layer1", "layer2", "layer3"])},
            gap_defaults={"partitions": 3, "rounds": 2, "epochs_per_step": 2},
            # 17 steps per epoch: RigL's 100-step interval would allow only two updates.
            method_defaults={"rigl": {"delta_t": 20}},
            lr_schedule="cosine",
            warmup_epochs=1,
            flops_batch=(flops_images, torch.zeros(1, dtype=torch.long)),
            forward=_forward,
            flops_batch_size=1,
        )

    def _paper(
        self, data_root: Path | None, batch_size: int | None, device: torch.device
    ) -> TaskSetup:
        if data_root is None:
            raise UserError(
                "profile paper needs --data-root pointing at ImageNet (train/ and val/ folders)"
            )
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
        train_all = image_folder(data_root / "train", train_tf)
        test = image_folder(data_root / "val", eval_tf)
        check_same_classes(train_all, test, data_root / "val")
        # Validation (for any selection) = every 100th training image, held out from training;
        # ImageNet's val/ folder is the test split reported in the leaderboard.
        held = set(range(0, len(train_all), 100))
        train = Subset(train_all, [i for i in range(len(train_all)) if i not in held])
        val_base = image_folder(data_root / "train", eval_tf)
        val = Subset(val_base, sorted(held))
        bs = batch_size or 256
        workers = 0 if device.type == "cpu" else 8
        train_loader, val_loader, test_loader = self._loaders(train, val, test, bs, workers)
        model = build_resnet50(len(train_all.classes))
        prunable = _prunable(model)
        stages = ["layer1", "layer2", "layer3", "layer4"]
        return TaskSetup(
            model=model,
            train_loader=train_loader,
            val_loader=val_loader,
            test_loader=test_loader,
            loss=_make_loss(0.1),
            evaluate=top1,
            make_optimizer=lambda params: torch.optim.SGD(
                params, lr=0.1 * bs / 256, momentum=0.9, nesterov=True, weight_decay=1e-4
            ),
            epochs=990,  # C-GaP: R=7 rounds x kappa=4 x T=30 + F=150 (GAP_SPEC.md)
            metric="top1",
            dataset=f"ImageFolder at {data_root}",
            prunable=prunable,
            policy=POLICY,
            partitions={4: stage_partitions(model, prunable, stages)},
            gap_defaults={"partitions": 4, "rounds": 7, "epochs_per_step": 30},
            lr_schedule="cosine",
            warmup_epochs=5,
            flops_batch=(torch.zeros(1, 3, 224, 224), torch.zeros(1, dtype=torch.long)),
            forward=_forward,
            flops_batch_size=1,
        )


def _make_loss(smoothing: float):
    criterion = nn.CrossEntropyLoss(label_smoothing=smoothing)

    def loss(model: nn.Module, batch) -> torch.Tensor:
        images, labels = batch
        return criterion(model(images), labels)

    return loss
