"""Detection: the COCO loader on what real COCO contains, pycocotools mAP, a paper-profile smoke
run of SSD300-VGG16 and an end-to-end tiny run."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_one
from PIL import Image

from gapbench.cli import main
from gapbench.errors import UserError
from tasks.detection.coco import CocoDetection, coco_map, load_coco

CATEGORIES = [
    {"id": 1, "name": "person"},
    {"id": 5, "name": "airplane"},
    {"id": 90, "name": "toothbrush"},
]


def write_fixture(root: Path, split: str) -> Path:
    """Four images: RGB with objects of three non-contiguous categories, a crowd region and a
    degenerate box; a grayscale image; an image without annotations; a small extra RGB image."""
    rng = np.random.default_rng(0)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    images = []
    for i, (mode, size) in enumerate(
        [("RGB", (80, 60)), ("L", (64, 64)), ("RGB", (70, 50)), ("RGB", (50, 50))], 1
    ):
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).convert(mode).save(root / split / f"{i:012d}.jpg")
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "width": size[0], "height": size[1]})
    anns = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [5, 5, 20, 30],
            "area": 600,
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 90,
            "bbox": [40, 10, 30, 20],
            "area": 600,
            "iscrowd": 0,
        },
        {
            "id": 3,
            "image_id": 1,
            "category_id": 5,
            "bbox": [0, 40, 80, 20],
            "area": 1600,
            "iscrowd": 1,
        },
        {
            "id": 4,
            "image_id": 1,
            "category_id": 5,
            "bbox": [10, 10, 0, 15],
            "area": 0,
            "iscrowd": 0,
        },
        {
            "id": 5,
            "image_id": 2,
            "category_id": 5,
            "bbox": [10, 12, 30, 25],
            "area": 750,
            "iscrowd": 0,
        },
        {
            "id": 6,
            "image_id": 4,
            "category_id": 1,
            "bbox": [20, 20, 25, 25],
            "area": 625,
            "iscrowd": 0,
        },
    ]
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return path


def test_loader_handles_ids_crowds_empty_images_degenerate_boxes_and_grayscale(tmp_path, caplog):
    ann = write_fixture(tmp_path, "val2017")
    with caplog.at_level(logging.WARNING):
        ds = CocoDetection(tmp_path / "val2017", ann, train=False)
    assert ds.label_of == {1: 1, 5: 2, 90: 3} and ds.category_of[3] == 90
    assert ds.dropped_degenerate == 1 and "dropped 1 degenerate" in caplog.text
    image, target = ds[0]
    assert target["labels"].tolist() == [1, 3]  # crowd and degenerate boxes are not trained on
    assert target["boxes"][0].tolist() == [5, 5, 25, 35]  # xywh -> xyxy
    gray, _ = ds[1]
    assert gray.shape == (3, 64, 64)  # grayscale read as RGB
    _, empty = ds[2]
    assert empty["boxes"].shape == (0, 4) and len(ds) == 4


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"images": []}', "no 'annotations' list"),
        (
            '{"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2]}]}',
            "valid bbox",
        ),
        (
            '{"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4]}]}',
            "unknown image_id",
        ),
    ],
)
def test_malformed_annotation_file_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "instances_val2017.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as err:
        load_coco(path)
    assert str(path) in str(err.value)


def _gt_as_detections(coco, jitter=0.0):
    rng = np.random.default_rng(0)
    dets = []
    for ann in coco.dataset["annotations"]:
        if ann["iscrowd"] or ann["bbox"][2] <= 0:
            continue
        x, y, w, h = ann["bbox"]
        dx, dy = rng.uniform(-jitter, jitter, 2) * np.array([w, h])
        dets.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox": [x + dx, y + dy, w, h],
                "score": 0.9,
            }
        )
    return dets


def test_ground_truth_fed_back_scores_100_and_perturbed_boxes_score_lower(tmp_path):
    coco = load_coco(write_fixture(tmp_path, "val2017"))
    perfect = coco_map(coco, _gt_as_detections(coco))
    assert perfect["mAP"] == pytest.approx(100.0) and perfect["mAP50"] == pytest.approx(100.0)
    shifted = coco_map(coco, _gt_as_detections(coco, jitter=0.3))
    assert shifted["mAP"] < 60.0
    assert coco_map(coco, [])["mAP"] == 0.0


@pytest.mark.slow
def test_paper_profile_runs_two_steps_of_ssd300_vgg16(tmp_path):
    for split in ("train2017", "val2017"):
        write_fixture(tmp_path / "coco", split)
    record = run_one(
        tmp_path / "out", task="detection", profile="paper", data_root=str(tmp_path / "coco"),
        batch_size=2, max_steps=2,
    )  # fmt: skip
    assert record.budget["steps_run"] == 2 and record.status == "stopped_early"
    assert record.alive_prunable_params == round(0.1 * record.prunable_params)
    assert [len(g) for g in record.method_log["partitions"]] == [9, 5, 8]
    assert set(record.metrics) == {"mAP", "mAP50", "mAP75"}
    assert record.policy["dense_layer_tensors"] == ["backbone.features.0.weight"]
    assert record.policy["task_excluded_prefixes"] == ["head"]


@pytest.mark.slow
def test_tiny_end_to_end_with_a_sparse_method(tmp_path, capsys):
    code = main(
        [
            "run",
            "--task",
            "detection",
            "--methods",
            "magnitude",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| magnitude | uniform | 0.90 |" in out and "mAP50" in out
    record = json.loads(next((tmp_path / "records").glob("*.json")).read_text())
    assert record["alive_prunable_params"] == round(0.1 * record["prunable_params"])
    assert record["policy"]["task_excluded_tensors"]  # the SSD heads stay dense
    assert all(n.startswith("head.") for n in record["policy"]["task_excluded_tensors"])
    assert torch.isfinite(torch.tensor(record["history"][0]["train_loss"]))
