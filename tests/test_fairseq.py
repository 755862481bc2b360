"""The fairseq front-end: `--task gapbench_translation` trains GaP at exact sparsity, resumes from
fairseq's checkpoint_last.pt with the method's state, refuses --fp16, and fairseq-generate output
scored by sacreBLEU lands in a record the leaderboard shows.

The end-to-end test needs fairseq (0.12 API) and its console scripts:
    pip install cython && pip install --no-build-isolation fairseq-fixed==0.12.3.1
It is skipped with that reason otherwise; the scoring helper and option parsing are tested alone.
"""

import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from gapbench.errors import UserError
from gapbench.integrations.fairseq import USER_DIR
from gapbench.integrations.fairseq.driver import parse_partitions
from gapbench.integrations.fairseq.score import read_generate_output, score
from gapbench.report.records import REQUIRED_FLOPS, SCHEMA_VERSION, RunRecord, run_id, write_record

HAVE_FAIRSEQ = importlib.util.find_spec("fairseq") is not None and all(
    shutil.which(tool) for tool in ("fairseq-preprocess", "fairseq-train", "fairseq-generate")
)
needs_fairseq = pytest.mark.skipif(
    not HAVE_FAIRSEQ,
    reason="fairseq is not installed: pip install cython && "
    "pip install --no-build-isolation fairseq-fixed==0.12.3.1",
)

GENERATE_OUTPUT = """\
S-1\tb a
T-1\tthe cat sat
H-1\t-0.5\tthe cat sat
D-1\t-0.5\tthe cat sat
P-1\t-0.1 -0.2 -0.3 -0.4
S-0\ta b
T-0\ta dog ran home
H-0\t-0.4\ta dog ran home
D-0\t-0.4\ta dog ran home
D-0\t-0.9\ta second hypothesis
Generate test with beam=2: BLEU4 = 100.00
"""


# ---- without fairseq ---------------------------------------------------------------------------
def test_partition_shorthand():
    assert parse_partitions("enc0-1|enc2,dec0|decoder.layers.1") == [
        ["encoder.layers.0", "encoder.layers.1"],
        ["encoder.layers.2", "decoder.layers.0"],
        ["decoder.layers.1"],
    ]
    assert parse_partitions(None) is None
    with pytest.raises(UserError):
        parse_partitions("enc3-1")


def _dummy_record() -> RunRecord:
    values = {}
    for f in fields(RunRecord):
        kind = str(f.type)
        values[f.name] = (
            {} if kind.startswith("dict") else [] if kind.startswith("list")
            else 0.0 if kind == "float" else 0 if kind == "int" else None if "None" in kind else "x"
        )  # fmt: skip
    identity = {"task": "t", "method": "gap", "distribution": "uniform", "seed": 0}
    values.update(schema=SCHEMA_VERSION, run_id=run_id(identity), identity=identity, seed=0)
    values.update(status="no_metric", metric="bleu", metrics={}, task="t", method="gap")
    values.update(distribution="uniform", flops=dict.fromkeys(REQUIRED_FLOPS))
    return RunRecord(**values)


def test_score_reads_generate_output_in_sentence_order_and_updates_the_record(tmp_path):
    gen = tmp_path / "gen.out"
    gen.write_text(GENERATE_OUTPUT)
    hyps, refs = read_generate_output(gen)
    assert hyps == ["a dog ran home", "the cat sat"] and refs == hyps
    path = write_record(_dummy_record(), tmp_path / "out")
    save_dir = tmp_path / "ckpt"
    save_dir.mkdir()
    (save_dir / "gapbench_record.json").write_text(json.dumps({"record": str(path)}))
    assert score(gen, save_dir) == pytest.approx(100.0)
    data = json.loads(path.read_text())
    assert data["metrics"]["bleu"] == 100.0 and data["task_extra"]["bleu_sentences"] == 2
    assert data["status"] == "complete"  # no_metric until scored
    assert "13a" in data["task_extra"]["bleu_signature"]
    refs_file = tmp_path / "refs.txt"
    refs_file.write_text("a dog ran home\nthe dog sat\n")
    assert score(gen, path, refs_file) < 100.0
    with pytest.raises(UserError):
        score(gen, tmp_path / "nowhere")


# ---- end to end through fairseq ------------------------------------------------------------------
def _corpus(root: Path) -> None:
    """A toy 'translation': every source word maps to a target word, in reverse order."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(20)]
    for split, n in (("train", 320), ("valid", 32), ("test", 32)):
        src, tgt = [], []
        for _ in range(n):
            sent = [rng.choice(words) for _ in range(rng.randint(3, 7))]
            src.append(" ".join(sent))
            tgt.append(" ".join("v" + w[1:] for w in reversed(sent)))
        (root / f"{split}.en").write_text("\n".join(src) + "\n")
        (root / f"{split}.de").write_text("\n".join(tgt) + "\n")


def _run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args[0]} failed:\n{proc.stderr[-4000:]}")
    return proc


def _train(root: Path, save: str, out: str, *extra: str, check: bool = True):
    return _run(
        [
            "fairseq-train", "bin", "--user-dir", USER_DIR, "--task", "gapbench_translation",
            "--arch", "transformer", "--encoder-layers", "2", "--decoder-layers", "2",
            "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
            "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
            "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
            "--share-decoder-input-output-embed", "--optimizer", "adam",
            "--adam-betas", "(0.9,0.997)", "--adam-eps", "1e-9", "--lr", "3e-3",
            "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "10",
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--dropout", "0.1", "--max-tokens", "800", "--update-freq", "2", "--cpu", "--seed", "1",
            "--num-workers", "0", "--no-progress-bar", "--log-interval", "50",
            "--gapbench-method", "gap", "--gapbench-sparsity", "0.8",
            "--gapbench-method-args", '{"partitions": 2, "rounds": 1}',
            "--gapbench-partitions", "enc0-1|dec0-1", "--gapbench-task-name", "toy_mt",
            "--gapbench-out", out, "--save-dir", save, *extra,
        ],
        root, check,
    )  # fmt: skip


def _checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _masks(ckpt: dict) -> dict:
    return ckpt["extra_state"]["GapbenchTranslationTask"]["gapbench"]["method"]["masks"]


@needs_fairseq
@pytest.mark.slow
def test_gap_through_fairseq_is_exact_resumes_and_is_scored(tmp_path):
    _corpus(tmp_path)
    _run(
        ["fairseq-preprocess", "--source-lang", "en", "--target-lang", "de",
         "--trainpref", "train", "--validpref", "valid", "--testpref", "test",
         "--destdir", "bin", "--workers", "1"],
        tmp_path,
    )  # fmt: skip

    # Straight: 2 grow epochs (one per partition) + 2 fine-tune epochs = --max-epoch 4.
    _train(tmp_path, "ckA", "outA", "--max-epoch", "4")
    (record_path,) = (tmp_path / "outA" / "records").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["profile"] == "fairseq" and record["task"] == "toy_mt"
    assert record["alive_prunable_params"] == round(0.2 * record["prunable_params"])
    assert record["budget"]["steps_run"] == 4 * record["budget"]["steps_per_epoch"]
    assert record["policy"]["task_excluded_tensors"] == ["decoder.output_projection.weight"]
    assert len(record["per_layer"]) == 2 * 6 + 2 * 10  # q/k/v/out + fc1/fc2 (+ cross-attention)
    grown = [step["grown"] for step in record["method_log"]["schedule"]]
    assert all(n.startswith("encoder.") for n in grown[0]) and len(grown[0]) == 12
    assert all(n.startswith("decoder.") for n in grown[1]) and len(grown[1]) == 20
    assert "valid_loss" in record["val_metrics"]

    ckpt_a = _checkpoint(tmp_path / "ckA" / "checkpoint_last.pt")
    masks = _masks(ckpt_a)
    alive = 0
    for name, mask in masks.items():
        weight = ckpt_a["model"][name]
        assert torch.all(weight[~mask] == 0), name  # pruned weights are exactly zero
        assert int(mask.sum()) == record["per_layer"][name]["alive"]
        alive += int(mask.sum())
    assert alive == record["alive_prunable_params"]

    # Interrupted after the grow phase (budget kept at 4), then continued by rerunning with a
    # larger --max-epoch: fairseq restores checkpoint_last.pt and the method its state.
    _train(tmp_path, "ckB", "outB", "--max-epoch", "2", "--gapbench-epochs", "4")
    assert not (tmp_path / "outB").exists()  # no record before the budget is complete
    state = _checkpoint(tmp_path / "ckB" / "checkpoint_last.pt")["extra_state"]
    assert state["GapbenchTranslationTask"]["gapbench"]["ended"] == 1
    _train(tmp_path, "ckB", "outB", "--max-epoch", "4", "--gapbench-epochs", "4")
    (resumed_path,) = (tmp_path / "outB" / "records").glob("*.json")
    resumed = json.loads(resumed_path.read_text())
    assert resumed["run_id"] == record["run_id"]  # same run, same identity
    assert resumed["method_log"]["schedule"] == record["method_log"]["schedule"]
    assert resumed["budget"]["steps_run"] == record["budget"]["steps_run"]
    ckpt_b = _checkpoint(tmp_path / "ckB" / "checkpoint_last.pt")
    for name, mask in masks.items():
        assert torch.equal(_masks(ckpt_b)[name], mask), name
    # fairseq's own resume is not bit-exact on CPU (plain --task translation differs by ~3e-3 too).
    for key, value in ckpt_a["model"].items():
        assert torch.allclose(value.float(), ckpt_b["model"][key].float(), atol=0.05), key

    # --fp16 keeps FP32 master weights outside the masks: refused with one clear error.
    refused = _train(tmp_path, "ckC", "outC", "--max-epoch", "4", "--fp16", check=False)
    assert refused.returncode != 0
    assert "UserError" in refused.stderr and "--fp16" in refused.stderr

    # fairseq-generate on the test split, scored by sacreBLEU into the record.
    gen = _run(
        ["fairseq-generate", "bin", "--user-dir", USER_DIR, "--task", "gapbench_translation",
         "--path", "ckA/checkpoint_last.pt", "--gen-subset", "test", "--beam", "2",
         "--max-len-a", "1", "--max-len-b", "4", "--batch-size", "64", "--cpu",
         "--num-workers", "0", "--remove-bpe"],
        tmp_path,
    )  # fmt: skip
    (tmp_path / "gen.out").write_text(gen.stdout)
    _run(
        [sys.executable, "-m", "gapbench.integrations.fairseq.score", "gen.out", "--record", "ckA"],
        tmp_path,
    )
    scored = json.loads(record_path.read_text())
    assert scored["metric"] == "bleu" and scored["metrics"]["bleu"] >= 0.0
    assert scored["task_extra"]["bleu_sentences"] == 32

    board = _run([sys.executable, "-m", "gapbench", "leaderboard", "--out", "outA"], tmp_path)
    table = (tmp_path / "outA" / "leaderboard.md").read_text()
    assert "toy_mt" in table and "fairseq" in table and "| gap |" in table, board.stdout
