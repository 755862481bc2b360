"""partseg: loader on a hand-written fixture, mIoU conventions, point ops, paper smoke, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_one

from gapbench.cli import main
from gapbench.errors import UserError
from gapbench.sparse.partition import partitions_by_prefix
from gapbench.sparse.selection import select_prunable
from tasks.partseg.convert import main as convert_main
from tasks.partseg.data import PartSegDataset
from tasks.partseg.metrics import MIoU, shape_iou
from tasks.partseg.ops import ball_query, farthest_point_sample
from tasks.partseg.task import PARTITIONS, PartSegTask

MUG, TABLE = "03797390", "04379243"


def write_fixture(root: Path, n: int = 40) -> Path:
    """Two real categories (a subset of 16) with global part ids: Mug 36-37, Table 47-49."""
    rng = np.random.default_rng(0)
    (root / "train_test_split").mkdir(parents=True)
    (root / "synsetoffset2category.txt").write_text(f"Mug\t{MUG}\nTable\t{TABLE}\n")
    entries = []
    for syn, labels in ((MUG, (36, 37)), (TABLE, (47, 48, 49))):
        (root / syn).mkdir()
        for i in range(3):
            rows = [
                f"{x:.3f} {y:.3f} {z:.3f} 0 1 0 {labels[k % len(labels)]}"
                for k, (x, y, z) in enumerate(rng.uniform(-1, 1, (n, 3)))
            ]
            (root / syn / f"s{i}.txt").write_text("\n".join(rows) + "\n")
            entries.append(f"shape_data/{syn}/s{i}")
    for split in ("train", "val", "test"):
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(
            json.dumps(entries)
        )
    return root


def test_loader_reads_the_real_layout_with_a_category_subset(tmp_path):
    ds = PartSegDataset(write_fixture(tmp_path), "test", npoints=16, train=False)
    assert len(ds) == 6
    points, cat, labels = ds[0]
    assert points.shape == (16, 6) and labels.shape == (16,)
    assert cat.item() == 11 and set(labels.tolist()) <= {36, 37}  # Mug is category 11
    points, cat, labels = ds[5]
    assert cat.item() == 15 and set(labels.tolist()) <= {47, 48, 49}
    assert points[:, :3].norm(dim=1).max() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "damage, needle",
    [
        (
            lambda r: (r / "train_test_split" / "shuffled_test_file_list.json").unlink(),
            "shuffled_test",
        ),
        (lambda r: (r / MUG / "s0.txt").write_text("1 2 3 4 5 6\n"), "s0.txt"),
        (lambda r: (r / MUG / "s1.txt").write_text("0 0 0 0 1 0 47\n"), "outside Mug's range"),
        (lambda r: (r / "synsetoffset2category.txt").write_text(f"Mug\t{MUG}\n"), "not on disk"),
    ],
)
def test_bad_data_raises_one_clear_user_error(tmp_path, damage, needle):
    root = write_fixture(tmp_path)
    damage(root)
    with pytest.raises(UserError, match=needle):
        PartSegDataset(root, "test", 16, train=False)


def test_miou_conventions_absent_parts_and_per_category_average():
    # Mug (36, 37): part 36 IoU 1/2 (pred {0,1}, truth {0}); part 37 IoU 2/3 -> mean 7/12.
    pred, truth = np.array([36, 36, 37, 37]), np.array([36, 37, 37, 37])
    assert shape_iou(pred, truth, "Mug") == pytest.approx((1 / 2 + 2 / 3) / 2)
    # Table (47-49): 47 perfect, 48 and 49 absent from both -> IoU 1 each.
    assert shape_iou(np.array([47, 47]), np.array([47, 47]), "Table") == 1.0
    m = MIoU()
    m.add(pred, truth, 11)  # Mug 7/12
    m.add(np.array([47, 48]), np.array([47, 47]), 15)  # Table: 1/2, 0, 1 -> 1/2
    m.add(np.array([47, 47]), np.array([47, 47]), 15)  # Table 1
    r = m.result()
    assert r["instance_mIoU"] == pytest.approx((7 / 12 + 0.5 + 1) / 3)
    assert r["class_mIoU"] == pytest.approx((7 / 12 + 0.75) / 2)


def _fps_reference(xyz: np.ndarray, k: int) -> list[int]:
    chosen, dist = [0], np.full(len(xyz), np.inf)
    for _ in range(k - 1):
        dist = np.minimum(dist, ((xyz - xyz[chosen[-1]]) ** 2).sum(1))
        chosen.append(int(dist.argmax()))
    return chosen


def test_fps_and_ball_query_match_brute_force():
    gen = torch.Generator().manual_seed(0)
    xyz = torch.rand(2, 30, 3, generator=gen)
    idx = farthest_point_sample(xyz, 8)
    for b in range(2):
        assert idx[b].tolist() == _fps_reference(xyz[b].numpy(), 8)
    centers = xyz[:, :5]
    got = ball_query(0.3, 4, xyz, centers)
    for b in range(2):
        for s in range(5):
            near = [i for i in range(30) if ((xyz[b, i] - centers[b, s]) ** 2).sum() <= 0.09]
            want = (near[:4] + [near[0]] * 4)[:4]
            assert got[b, s].tolist() == want


def test_prunable_excludes_first_layer_and_classifier_and_partitions_cover_all():
    from tasks.partseg.model import PointNet2PartSeg

    model = PointNet2PartSeg(width=0.25, npoints=(16, 8))
    profile = PartSegTask.profiles["tiny"]
    names = select_prunable(model, profile.exclude, ("first", "last")).prunable
    assert "sa1.mlp.0.weight" not in names and "classifier.weight" not in names
    for kappa, groups in PARTITIONS.items():
        parts = partitions_by_prefix(names, groups)
        assert len(parts) == kappa and sorted(sum(parts, [])) == sorted(names)
    assert PartSegTask.metrics[0] == "instance_mIoU"


@pytest.mark.slow
def test_paper_profile_runs_two_steps_on_the_fixture(tmp_path):
    record = run_one(
        tmp_path / "out", task="partseg", profile="paper", data_root=str(write_fixture(tmp_path / "data")),
        batch_size=2, max_steps=2,
    )  # fmt: skip
    assert record.budget["steps_run"] == 2
    assert set(record.metrics) == {"instance_mIoU", "class_mIoU"}
    assert [len(g) for g in record.method_log["partitions"]] == [8, 4, 4]


def test_convert_reads_ply_with_label_sidecar(tmp_path):
    import open3d as o3d

    xyz = np.random.default_rng(0).uniform(-1, 1, (50, 3))
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    o3d.io.write_point_cloud(str(tmp_path / "cup.ply"), pcd)
    np.savetxt(tmp_path / "cup.labels.txt", np.r_[np.full(30, 37), np.full(20, 36)], fmt="%d")
    out = tmp_path / "root"
    for split in ("train", "test"):
        assert convert_main([str(tmp_path / "cup.ply"), "--category", "Mug", "--out", str(out),
                             "--split", split]) == 0  # fmt: skip
    ds = PartSegDataset(out, "test", 8, train=False)
    assert len(ds) == 1 and set(ds[0][2].tolist()) <= {36, 37}
    np.savetxt(tmp_path / "cup.labels.txt", np.full(50, 5), fmt="%d")
    assert convert_main([str(tmp_path / "cup.ply"), "--category", "Mug", "--out", str(out)]) == 2


@pytest.mark.slow
def test_tiny_end_to_end_with_a_sparse_method(tmp_path, capsys):
    args = ["run", "--task", "partseg", "--methods", "magnitude", "--epochs", "1"]
    assert main([*args, "--max-steps", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "partseg magnitude sparsity=0.9" in out and "instance_mIoU=" in out
    record = json.loads(next((tmp_path / "records").glob("*.json")).read_text())
    assert record["alive_prunable_params"] == round(0.1 * record["prunable_params"])
    assert record["policy"]["dense_layer_tensors"] == ["sa1.mlp.0.weight", "classifier.weight"]
    assert record["budget"]["steps_run"] == 3 and 0.0 <= record["metrics"]["instance_mIoU"] <= 1.0


def test_twin_split_sizes_name_their_own_set(tmp_path):
    from tasks.partseg.synthetic import FOLDER, SPLIT_SIZES, ensure_tiny, set_name

    assert set_name() == "twin-v1-64-8-24"
    splits = {"train": 2, "val": 1, "test": 1}
    root = ensure_tiny(tmp_path, splits=splits)
    assert root == tmp_path / "twin-v1-2-1-1" / FOLDER
    assert len(PartSegDataset(root, "train", 16, train=True)) == 8
    assert len(PartSegDataset(root, "test", 16, train=False)) == 4
    for name in ("tiny", "bench"):
        profile = PartSegTask.profiles[name]
        sizes = "/".join(str(4 * n) for n in profile.options.get("splits", SPLIT_SIZES).values())
        assert f"{sizes} shapes" in profile.dataset
