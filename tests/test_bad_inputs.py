"""Hostile-but-realistic inputs (issue 19): each gives one line on stderr, a non-zero exit, no
traceback, and trains nothing. Then what a shared results folder may hold: files readable under the
umask, no user paths, no host names; and the summary lines a user reads.

Unwritable folders: as a normal user a folder is made read-only with chmod; root ignores
permissions, so there /proc (a folder nobody can create files in) stands in for it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import cli
from PIL import Image

import gapbench.registry as registry
from gapbench.report.atomic import atomic_write_bytes, remove_stale_temps
from gapbench.runner import RunLock, outcome_kind, summary
from tasks.partseg.categories import SYNSET_TO_NAME

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results" / "reference"
TINY = ["--profile", "digits", "--methods", "dense", "--epochs", "1", "--max-steps", "2",
        "--device", "cpu"]  # fmt: skip


# ---------------------------------------------------------------- data and folders the cases use


def unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot create files in."""
    if os.geteuid() == 0:
        return Path("/proc")
    folder = tmp_path / "readonly"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    return folder


def png(path: Path, size: int = 8, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path)
    return path


def image_tree(root: Path, per_class: int = 3) -> Path:
    """A small ImageFolder data root: train/val/test, two classes."""
    for split in ("train", "val", "test"):
        for label in ("0", "1"):
            for i in range(per_class):
                png(root / split / label / f"{i}.png", seed=i + 10 * int(label))
    return root


def coco_root(root: Path, doc: object, image_bytes: bytes | None = None) -> Path:
    """A detection tiny-profile data root (train/, val/, test/) whose train annotations are
    `doc`; `image_bytes` replaces the one training image's content."""
    for split in ("train", "val", "test"):
        png(root / split / "a.png", size=32)
        good = {
            "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
            "categories": [{"id": 1, "name": "box"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9]}],
        }
        (root / "annotations").mkdir(exist_ok=True)
        content = doc if split == "train" else good
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(content))
    if image_bytes is not None:
        (root / "train" / "a.png").write_bytes(image_bytes)
    return root


def partseg_root(root: Path, split_content: str, shape_rows: str = "") -> Path:
    synset = "02691156"
    (root / synset).mkdir(parents=True)
    (root / "synsetoffset2category.txt").write_text(f"{SYNSET_TO_NAME[synset]} {synset}\n")
    (root / synset / "s1.txt").write_text(shape_rows)
    (root / "train_test_split").mkdir()
    for split in ("train", "val", "test"):
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(split_content)
    return root


def truncated_png(tmp_path: Path) -> bytes:
    """A PNG whose header reads but whose pixel data is cut short."""
    data = png(tmp_path / "whole.png", size=64).read_bytes()
    return data[: len(data) // 2]


def plugin_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "my_plugin.py"
    path.write_text(body)
    return str(path)


MAGNITUDE_PLUGIN = """
from gapbench.registry import register_method
from gapbench.sparse import Method

@register_method("magnitude")
class Mine(Method):
    description = "a user's method under a built-in name"
"""

CocoCase = Callable[[Path], list[str]]


def _coco(doc: object, image_bytes: bytes | None = None) -> CocoCase:
    def argv(tmp: Path) -> list[str]:
        root = coco_root(tmp / "coco", doc, image_bytes)
        return ["run", "--task", "detection", "--data-root", str(root), "--out", str(tmp / "out"),
                "--methods", "dense", "--max-steps", "2", "--device", "cpu"]  # fmt: skip

    return argv


def _run(*extra: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["run", "--task", "classification", *TINY, *extra]


def _out(make: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda tmp: ["run", "--task", "classification", *TINY, "--out", str(make(tmp))]


def _file(tmp: Path) -> Path:
    (tmp / "afile").write_text("x")
    return tmp / "afile"


def _records_is(target: Callable[[Path], Path]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        out = tmp / "out"
        out.mkdir()
        place = target(tmp)
        if place.is_dir():
            (out / "records").symlink_to(place)
        else:
            shutil.copy(place, out / "records")
        return out

    return make


GOOD_IMAGES = [{"id": 1, "file_name": "a.png"}]
GOOD_CATS = [{"id": 1}]


def _ann(**fields: object) -> dict[str, object]:
    return {"images": GOOD_IMAGES, "categories": GOOD_CATS, "annotations": [fields]}


CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    # 6. output locations, checked before the first run
    "out is a file": (_out(_file), "is a file, not a folder"),
    "out under a file": (_out(lambda t: _file(t) / "sub"), "cannot write to"),
    "out unwritable": (_out(unwritable), "cannot write to"),
    "records is a file": (_out(_records_is(_file)), "records is a file"),
    "records unwritable": (_out(_records_is(unwritable)), "records"),
    # 7. data: corrupt images, malformed COCO, ShapeNet-part, translation
    "corrupt image": (
        lambda t: [
            "run",
            "--task",
            "classification",
            *TINY,
            "--out",
            str(t / "out"),
            "--data-root",
            str(_corrupt_tree(t)),
        ],  # fmt: skip
        "unreadable image",
    ),
    "coco images are numbers": (
        _coco({"images": [1, 2, 3], "categories": GOOD_CATS, "annotations": []}),
        "images[0] is int",
    ),
    "coco annotations not objects": (
        _coco({"images": GOOD_IMAGES, "categories": GOOD_CATS, "annotations": ["x"]}),
        "annotations[0] is str",
    ),
    "coco annotation without id": (
        _coco(_ann(image_id=1, category_id=1, bbox=[1, 1, 2, 2])),
        "has no int 'id'",
    ),
    "coco bbox of strings": (
        _coco(_ann(id=1, image_id=1, category_id=1, bbox=["1", "1", "2", "2"])),
        "valid bbox",
    ),
    "coco image without file_name": (
        _coco({"images": [{"id": 1}], "categories": GOOD_CATS, "annotations": []}),
        "no str 'file_name'",
    ),
    "coco corrupt image": (
        _coco({"images": GOOD_IMAGES, "categories": GOOD_CATS, "annotations": []}, b"junk"),
        "unreadable image",
    ),
    "detection empty data root": (
        lambda t: [
            "run",
            "--task",
            "detection",
            "--data-root",
            str(_mkdir(t / "empty")),
            "--out",
            str(t / "out"),
            "--methods",
            "dense",
            "--device",
            "cpu",
        ],  # fmt: skip
        "this profile expects train/ and annotations/instances_train.json",
    ),
    "translation file missing": (
        lambda t: [
            "run",
            "--task",
            "translation",
            "--data-root",
            str(_mkdir(t / "wmt")),
            "--out",
            str(t / "out"),
            "--methods",
            "dense",
            "--device",
            "cpu",
        ],  # fmt: skip
        "train.en/.de",
    ),
    "partseg split not a list": (
        lambda t: _partseg(t, '{"a": 1}'),
        "holds a JSON dict",
    ),
    "partseg split entry not a string": (
        lambda t: _partseg(t, "[3]"),
        "is not 'shape_data/<synset>/<id>'",
    ),
    "partseg nan point": (
        lambda t: _partseg(t, '["shape_data/02691156/s1"]', "0 0 0 0 0 1 0\nnan 0 0 0 0 1 0\n"),
        "s1.txt:2: not a finite number",
    ),
    "partseg fractional part label": (
        lambda t: _partseg(t, '["shape_data/02691156/s1"]', "0 0 0 0 0 1 0.5\n"),
        "must be whole numbers",
    ),
    # 8. plug-ins
    "plugin module raises ValueError": (
        lambda t: ["methods", "--plugin", _module(t, "raise ValueError('bad config')")],
        "failed to import: ValueError: bad config",
    ),
    "plugin file raises RuntimeError": (
        lambda t: [
            "run",
            "--task",
            "classification",
            *TINY,
            "--out",
            str(t / "out"),
            "--plugin",
            plugin_file(t, "raise RuntimeError('boom')"),
        ],  # fmt: skip
        "failed to import: RuntimeError: boom",
    ),
    "plugin calls sys.exit": (
        lambda t: ["methods", "--plugin", plugin_file(t, "import sys\nsys.exit(3)")],
        "called sys.exit(3)",
    ),
    "plugin takes a built-in name": (
        lambda t: ["methods", "--plugin", plugin_file(t, MAGNITUDE_PLUGIN)],
        "method name 'magnitude' is taken",
    ),
    "plugin module missing": (
        lambda t: ["methods", "--plugin", "zz_no_such_plugin_module"],
        "no module 'zz_no_such_plugin_module'",
    ),
    # 9. export and speed
    "export to a folder": (
        lambda t: ["export", "0123456789ab", "--out", str(t), "--to", str(t)],
        "is a folder",
    ),
    "export under a file": (
        lambda t: [
            "export",
            _shipped_2_4(),
            "--out",
            str(REFERENCE),
            "--to",
            str(_file(t) / "x.pt"),
        ],  # fmt: skip
        "is a file, not a folder",
    ),
    "export unwritable": (
        lambda t: [
            "export",
            _shipped_2_4(),
            "--out",
            str(REFERENCE),
            "--to",
            str(unwritable(t) / "x.pt"),
        ],  # fmt: skip
        "cannot write",
    ),
    "export glob run id": (
        lambda t: ["export", "*", "--out", str(REFERENCE), "--to", str(t / "x.pt")],
        "no record *",
    ),
    "speed batch size 0": (
        lambda t: ["speed", _shipped_2_4(), "--out", str(REFERENCE), "--batch-size", "0"],
        "--batch-size must be at least 1",
    ),
    "speed repeats 0": (
        lambda t: ["speed", _shipped_2_4(), "--out", str(REFERENCE), "--repeats", "0"],
        "--repeats must be at least 1",
    ),
    # smaller things
    "vs unknown method": (_run("--vs", "nosuch", "--out", "/tmp/unused"), "--vs 'nosuch'"),
    "leaderboard vs unknown method": (
        lambda t: ["leaderboard", "--vs", "nosuch", "--out", str(_one_record(t))],
        "--vs 'nosuch'",
    ),
    "unknown task": (lambda t: ["run", "--task", "nosuch"], "unknown task 'nosuch'"),
}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _corrupt_tree(tmp: Path) -> Path:
    root = image_tree(tmp / "images")
    (root / "train" / "1" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def _partseg(tmp: Path, split: str, rows: str = "0 0 0 0 0 1 0\n") -> list[str]:
    root = partseg_root(tmp / "shapenet", split, rows)
    return ["run", "--task", "partseg", "--data-root", str(root), "--out", str(tmp / "out"),
            "--methods", "dense", "--device", "cpu"]  # fmt: skip


def _module(tmp: Path, body: str) -> str:
    (tmp / "zz_bad_plugin_mod.py").write_text(body)
    sys.path.insert(0, str(tmp))
    return "zz_bad_plugin_mod"


def _shipped_2_4() -> str:
    """A shipped run that kept its weights (so export and speed get past the record)."""
    for path in sorted((REFERENCE / "weights").glob("*.pt")):
        return path.stem
    raise AssertionError("results/reference ships no weights")


def _one_record(tmp: Path) -> Path:
    (tmp / "out" / "records").mkdir(parents=True)
    shutil.copy(next((REFERENCE / "records").glob("*.json")), tmp / "out" / "records")
    return tmp / "out"


@pytest.fixture(autouse=True)
def clean_registry_and_path():
    """Plug-ins must not leak into other tests; nor a temporary folder on sys.path."""
    registry.discover("methods")
    methods, modules, path = dict(registry.METHODS), set(sys.modules), list(sys.path)
    yield
    registry.METHODS.clear()
    registry.METHODS.update(methods)
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        if name.startswith("gapbench_plugin_") or name.startswith("zz_"):
            del sys.modules[name]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_nonzero_exit_and_trains_nothing(case, tmp_path, capsys):
    make_argv, message = CASES[case]
    argv = make_argv(tmp_path)
    code, out, err = cli(capsys, *argv)
    assert code != 0, out
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert ": trained" not in out
    assert not list(tmp_path.rglob("records/*.json")) or case == "leaderboard vs unknown method"


# ------------------------------------------------------------------------- direct checks


def test_help_says_plugins_execute_code():
    from gapbench.cli import build_parser

    run = build_parser()._subparsers._group_actions[0].choices["run"]
    assert "EXECUTES its code" in " ".join(run.format_help().split())


def test_lock_under_a_file_is_a_user_error_not_a_traceback(tmp_path):
    from gapbench.errors import UserError

    with pytest.raises(UserError, match="cannot create lock file"):
        RunLock(_file(tmp_path), "0123456789ab").acquire()


def test_picture_broken_inside_fails_with_its_path_before_a_record(tmp_path, capsys):
    """The header reads (so the up-front check passes); decoding fails: one line naming it."""
    root = image_tree(tmp_path / "images")
    bad = root / "train" / "0" / "0.png"
    bad.write_bytes(truncated_png(tmp_path))
    code, out, err = cli(capsys, "run", "--task", "classification", *TINY,
                         "--data-root", str(root), "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 2 and str(bad) in err and len(err.strip().splitlines()) == 1, err
    assert not list((tmp_path / "out").rglob("*.json"))


def test_unknown_task_is_reported_without_importing_torch():
    probe = (
        "import sys; from gapbench.cli import main; code = main(['run', '--task', 'nosuch']); "
        "assert code == 2 and 'torch' not in sys.modules, sorted(sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "unknown task 'nosuch'" in done.stderr


def test_fp16_on_cpu_warns_once(capsys):
    import torch

    from gapbench.cli import _warn_slow_precision

    _warn_slow_precision("fp16", torch.device("cpu"))
    _warn_slow_precision("fp32", torch.device("cpu"))
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "12x slower" in err


def test_outcomes_are_counted_by_kind():
    lines = ["trained", "reusing abc (use --force to rerun)", "reusing abc (written by another",
             "skipped: another process is training abc (x)"]  # fmt: skip
    counts: dict[str, int] = {}
    for line in lines:
        counts[outcome_kind(line)] = counts.get(outcome_kind(line), 0) + 1
    assert summary(counts) == "1 trained, 2 reused, 1 skipped, 0 failed"


def test_stale_temp_files_go_and_fresh_ones_stay(tmp_path):
    old, fresh = tmp_path / ".a.json.x1.tmp", tmp_path / ".b.json.x2.tmp"
    old.write_text("{"), fresh.write_text("{")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert remove_stale_temps(tmp_path) == 1
    assert not old.exists() and fresh.exists()


def test_a_failed_atomic_write_leaves_no_temp_file(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_bytes(None, tmp_path / "x.json")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_a_run_on_user_data_shares_safely_and_reuses(tmp_path, capsys):
    """One real (2-step) run: the record and board hold no user path and respect the umask, the
    lock holds no host name, the rerun is counted as reused, the id ignores where the data is."""
    root = image_tree(tmp_path / "my_images")
    out = tmp_path / "out"
    argv = ["run", "--task", "classification", *TINY, "--data-root", str(root), "--out", str(out)]
    old = os.umask(0o022)
    try:
        code, stdout, err = cli(capsys, *argv)
    finally:
        os.umask(old)
    assert code == 0, err
    assert "runs: 1 trained, 0 reused, 0 skipped, 0 failed" in stdout
    (record_path,) = (out / "records").glob("*.json")
    for path in (record_path, out / "leaderboard.md", out / "leaderboard.csv"):
        assert str(tmp_path) not in path.read_text(), path
        assert path.stat().st_mode & 0o777 == 0o644, path
    record = json.loads(record_path.read_text())
    assert record["identity"]["data"]["name"] == "my_images"
    assert record["identity"]["data"]["files"] == 18 and "my_images" in record["dataset"]
    for lock in (out / "locks").glob("*.lock"):
        assert os.uname().nodename not in lock.read_text()
    code, stdout, _ = cli(capsys, *argv)
    assert code == 0 and "runs: 0 trained, 1 reused" in stdout
    # The same data elsewhere is the same run; changed data is another.
    moved = shutil.copytree(root, tmp_path / "elsewhere" / "my_images")
    from gapbench.runspec import data_identity

    assert data_identity(moved) == record["identity"]["data"]
    changed = shutil.copytree(root, tmp_path / "changed" / "my_images")
    png(changed / "train" / "0" / "extra.png")
    assert data_identity(changed) != record["identity"]["data"]


def test_shipped_records_keep_their_run_ids():
    """Runs on embedded data (no --data-root) hash as before: the shipped ids still match."""
    from gapbench.runspec import RunSpec

    path = next((REFERENCE / "records").glob("classification-gap-*.json"))
    record = json.loads(path.read_text())
    identity = {k: v for k, v in record["identity"].items() if k not in ("data", "schema")}
    assert record["identity"]["data"] is None
    assert RunSpec(**identity).run_id == record["run_id"]
