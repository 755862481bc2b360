"""Classification: the embedded digits in ImageFolder layout, and a smoke run of the paper profile
(torchvision ResNet-50) on a tiny ImageFolder tree with the image modes real ImageNet contains."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gapbench.task import get_task
from gapbench.train import RunConfig, Trainer
from tasks.classification.data import ensure_digits


def test_digits_are_written_as_an_imagefolder_split(cache_dir):
    root = ensure_digits(Path(cache_dir) / "classification")
    counts = {s: len(list((root / s).rglob("*.png"))) for s in ("train", "val", "test")}
    assert sum(counts.values()) == 1797
    assert counts["train"] == 1078 and counts["val"] + counts["test"] == 719
    assert sorted(p.name for p in (root / "train").iterdir()) == [str(d) for d in range(10)]


def _imagefolder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("n01440764", "n01443537"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            rgb = Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
            rgb.save(folder / "rgb.JPEG")
            rgb.convert("L").save(folder / "gray.JPEG")  # grayscale JPEG, as in ImageNet
            rgb.convert("CMYK").save(folder / "cmyk.JPEG")  # CMYK JPEG, as in ImageNet


def test_paper_profile_runs_two_steps_of_resnet50(tmp_path):
    _imagefolder(tmp_path / "imagenet")
    cfg = RunConfig(
        task="classification",
        method="gap",
        profile="paper",
        data_root=str(tmp_path / "imagenet"),
        batch_size=2,
        max_steps=2,
        out=str(tmp_path / "out"),
    )
    trainer = Trainer(cfg)
    record = trainer.run()
    assert type(trainer.model).__name__ == "ResNet"
    assert sum(p.numel() for p in trainer.model.parameters()) > 23_000_000
    assert record["status"] == "stopped_early" and record["budget"]["steps_run"] == 2
    assert record["budget"]["comparison_epochs"] == 990
    assert [len(g) for g in record["method_log"]["partitions"]] == [10, 13, 19, 10]  # by stage
    assert record["alive_prunable_params"] == round(0.1 * record["prunable_params"])
    assert record["dense_inference_flops"] == pytest.approx(
        8.2e9, rel=0.02
    )  # ResNet-50: ~4.1 GMACs


def test_paper_profile_without_data_root_is_a_user_error():
    from gapbench.errors import UserError

    with pytest.raises(UserError, match="--data-root"):
        get_task("classification").setup("paper", None, 0, __import__("torch").device("cpu"))
