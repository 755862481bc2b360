"""Classification: the embedded digits in ImageFolder layout, and a smoke run of the paper profile
(torchvision ResNet-50) on a tiny ImageFolder tree with the image modes real ImageNet contains."""

from pathlib import Path

import numpy as np
import pytest
from helpers import run_one
from PIL import Image

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


@pytest.mark.slow
def test_paper_profile_runs_two_steps_of_resnet50(tmp_path):
    _imagefolder(tmp_path / "imagenet")
    record = run_one(
        tmp_path / "out",
        profile="paper",
        data_root=str(tmp_path / "imagenet"),
        batch_size=2,
        max_steps=2,
    )
    assert record.params_total > 23_000_000  # torchvision ResNet-50
    assert record.status == "stopped_early" and record.budget["steps_run"] == 2
    assert record.epochs == 990
    # Consecutive partitions balanced by parameter count (by stage they differ 70x).
    sizes = record.method_log["partition_sizes"]
    assert len(sizes) == 4 and max(sizes) < 2.5 * min(sizes)
    assert record.alive_prunable_params == round(0.1 * record.prunable_params)
    assert record.flops["dense_inference"] == pytest.approx(8.2e9, rel=0.02)  # ~4.1 GMACs
    assert record.policy["dense_layer_tensors"] == ["conv1.weight"]  # fc pruned, as in RigL


def test_paper_profile_without_data_root_is_a_user_error():
    from helpers import spec_for

    from gapbench.errors import UserError

    with pytest.raises(UserError, match="--data-root"):
        spec_for(profile="paper")


def test_the_model_is_what_the_profile_declares():
    """Widths, blocks and stem stride come from the profile (they were once ignored)."""
    from dataclasses import replace

    from tasks.classification.task import PROFILES, tiny_resnet

    tiny = PROFILES["tiny"]
    model = tiny_resnet(10, tiny)
    assert model.conv1.out_channels == tiny.options["widths"][0]
    assert model.conv1.stride == (tiny.options["stem_stride"],) * 2
    names = {n for n, _ in model.named_parameters()}
    assert "layer1.1.conv1.weight" in names and "layer1.2.conv1.weight" not in names
    other = replace(tiny, options={**tiny.options, "widths": (8, 12, 20), "blocks": 1})
    model = tiny_resnet(10, other)
    assert model.fc.in_features == 20 and model.conv1.out_channels == 8
    assert not any(n.startswith("layer1.1.") for n, _ in model.named_parameters())


def test_shapes_split_sizes_name_their_own_folder(tmp_path):
    from tasks.classification.synthetic import SPLITS, ensure_shapes, folder_name

    assert folder_name() == folder_name(SPLITS) == "shapes10-v2"  # the shipped records' set
    root = ensure_shapes(tmp_path, splits={"train": 2, "val": 1, "test": 3})
    assert root.name == "shapes10-v2-2-1-3"
    counts = {s: len(list((root / s).rglob("*.png"))) for s in ("train", "val", "test")}
    assert counts == {"train": 20, "val": 10, "test": 30}
    with pytest.raises(ValueError, match="train, val and test"):
        ensure_shapes(tmp_path, splits={"train": 2, "test": 3})


def test_each_shapes_profile_names_the_set_it_reads():
    from tasks.classification.task import PROFILES

    for name in ("tiny", "bench"):
        profile = PROFILES[name]
        sizes = "/".join(str(10 * n) for n in profile.options["splits"].values())
        assert f"({sizes} images" in profile.dataset


@pytest.mark.parametrize("data", ["shapes", "digits"])
def test_embedded_sets_in_memory_give_the_pil_pipelines_samples_bit_for_bit(
    tmp_path, cache_dir, data
):
    """The in-memory sets replay RandomCrop(padding 2) and the flip with the same random draws, so
    runs on the embedded data are unchanged by holding it in memory (digits: 12 px upsampled)."""
    import torch

    from tasks.classification.synthetic import ensure_shapes
    from tasks.classification.task import _embedded_splits, _folder_splits

    if data == "shapes":
        root = ensure_shapes(tmp_path, splits={"train": 6, "val": 2, "test": 2})
    else:
        root = ensure_digits(Path(cache_dir) / "classification")
    flip = data == "shapes"
    pil, memory = _folder_splits(root, 20, flip), _embedded_splits(root, 20, flip)
    for pil_split, memory_split in zip(pil, memory):
        assert len(pil_split) == len(memory_split) and pil_split.classes == memory_split.classes
        for index in range(min(len(pil_split), 60)):
            torch.manual_seed(index)
            image, label = pil_split[index]
            torch.manual_seed(index)
            again, same_label = memory_split[index]
            assert torch.equal(image, again) and label == same_label, index
    torch.manual_seed(0)
    crops = {memory[0][0][0].sum().item() for _ in range(20)}
    assert len(crops) > 1  # the training split is augmented, not a fixed image
