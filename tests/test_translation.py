"""Tests of the translation task: text handling, BLEU, decoding, batching, bad input, smoke runs."""

from __future__ import annotations

import pytest
import torch

from gapbench.errors import UserError
from tasks.translation.batching import make_batches
from tasks.translation.data import read_corpus, remove_bpe
from tasks.translation.metrics import corpus_bleu
from tasks.translation.model import ModelConfig, Transformer
from tasks.translation.search import beam_search, greedy
from tasks.translation.synthetic import write_synthetic
from tasks.translation.task import TranslationTask
from tasks.translation.vocab import EOS, PAD, moses_detokenizer

SMALL = dict(d_model=32, ffn_dim=64, heads=4, encoder_layers=2, decoder_layers=2, vocab_size=120)


def test_bpe_removal_and_detok_round_trip():
    from sacremoses import MosesTokenizer

    assert remove_bpe("new@@ er house@@ s are big") == "newer houses are big"
    text = 'Das ist gut, sagte er: "Hallo (Welt)!"'
    toks = MosesTokenizer(lang="de").tokenize(text, escape=True)
    assert moses_detokenizer("de").detokenize(toks, unescape=True) == text


def test_bleu_identity_and_perturbed():
    refs = ["Der Hund sieht die Katze.", "Zwei Kinder bauen ein Haus heute."]
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    assert corpus_bleu(["Der Hund sieht Katze.", "Zwei Kinder bauen ein Boot."], refs) < 100.0


def test_beam_one_equals_greedy():
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(
            vocab_size=50,
            d_model=32,
            ffn_dim=64,
            heads=4,
            encoder_layers=1,
            decoder_layers=1,
            dropout=0.0,
        )
    ).eval()
    src = torch.randint(4, 50, (5, 7))
    src[:, -1] = 2
    assert beam_search(model, src, beam=1) == greedy(model, src)


class _EndsAtSourceLength(Transformer):
    """A decoder that ends each sentence once its prefix is as long as its unpadded source: the
    sentences of one batch finish at different steps, and each one's end travels with its rows."""

    def decode_step(self, tokens: torch.Tensor, state) -> torch.Tensor:
        logits = super().decode_step(tokens, state)
        source_length = state.mem_mask.reshape(len(tokens), -1).sum(1)
        logits[:, EOS] += torch.where(source_length <= state.length, 50.0, 0.0)
        return logits


@pytest.mark.parametrize("decode", ["greedy", "beam"])
def test_each_sentence_decodes_in_a_batch_as_it_does_alone(decode):
    """Sentences of one batch finish at different steps (finished ones keep only padding rows),
    with padded sources: none of that may change what any sentence decodes to."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, d_model=32, ffn_dim=64, heads=4, encoder_layers=1,
                      decoder_layers=2, dropout=0.0)  # fmt: skip
    model = _EndsAtSourceLength(cfg).eval()
    src = torch.randint(4, 40, (6, 9))
    for row, pad in enumerate([0, 5, 2, 7, 1, 4]):  # unpadded lengths 9, 4, 7, 2, 8, 5
        src[row, src.size(1) - pad :] = PAD
    run = greedy if decode == "greedy" else lambda m, s: beam_search(m, s, beam=3)
    batched = run(model, src)
    alone = [run(model, src[i : i + 1])[0] for i in range(len(src))]
    assert batched == alone
    assert len({len(out) for out in batched}) > 2  # the sentences did finish at different steps


def test_incremental_decoding_equals_the_full_decoder():
    """decode_step (cached keys/values, rows reordered as beam search does) gives the logits of
    decode over the whole prefix."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, d_model=32, ffn_dim=64, heads=4, encoder_layers=2,
                      decoder_layers=2, dropout=0.0)  # fmt: skip
    model = Transformer(cfg).eval()
    src = torch.randint(4, 40, (3, 6))
    src[0, -2:] = 1  # padding
    memory, mask = model.encode(src)
    state = model.start_decoding(memory, mask)
    prefix = torch.randint(4, 40, (3, 1))
    with torch.no_grad():
        for _ in range(5):
            step = model.decode_step(prefix[:, -1], state)
            full = model.decode(prefix, memory, mask)[:, -1]
            assert torch.allclose(step, full, atol=1e-5)
            rows = torch.tensor([0, 0, 2])  # beams of one sentence trade places
            prefix, memory, mask = prefix[rows], memory[rows], mask[rows]
            state.select(rows)
            state.mem_mask = mask
            state.memory_kv = [(k[rows], v[rows]) for k, v in state.memory_kv]
            prefix = torch.cat([prefix, torch.randint(4, 40, (3, 1))], dim=1)


def test_token_batches_bounded():
    lens = [3, 9, 4, 12, 7, 7, 2, 30]
    batches = make_batches(lens, lens, max_tokens=20)
    assert sorted(i for b in batches for i in b) == list(range(len(lens)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lens[i] for i in b) <= 20


def test_bad_input_errors(tmp_path):
    root = write_synthetic(tmp_path / "d", sizes={"train": 5, "valid": 3, "test": 3})
    (root / "valid.de").write_text("a\nb\n")
    try:
        read_corpus(root, "en", "de")
        raise AssertionError("expected UserError")
    except UserError as e:
        assert "valid.de" in str(e) and "line count" in str(e)
    (root / "valid.de").write_bytes(b"a\nb\xff\nc\n")
    try:
        read_corpus(root, "en", "de")
        raise AssertionError("expected UserError")
    except UserError as e:
        assert "valid.de:2" in str(e)
    (root / "test.en").unlink()
    (root / "valid.de").write_text("a\nb\nc\n")
    try:
        read_corpus(root, "en", "de")
        raise AssertionError("expected UserError")
    except UserError as e:
        assert "test.en" in str(e)


def test_paper_profile_follows_the_official_recipe():
    profile = TranslationTask.profiles["paper"]
    recipe = profile.options["recipe"]
    assert (recipe.dropout, recipe.attention_dropout, recipe.activation_dropout) == (0.1, 0.1, 0.1)
    assert profile.optimizer.eps == 1e-9 and profile.optimizer.betas == (0.9, 0.997)
    assert profile.batch_size == 5120 * 8 and profile.device_batch == 5120
    from gapbench.runner import split_batch

    assert split_batch(profile, profile.batch_size, 1, None) == (5120, 8)  # accumulate on 1 GPU
    assert split_batch(profile, profile.batch_size, 8, None) == (5120, 1)
    assert profile.exclude == ("output_proj",) and profile.dense_layers == "none"


@pytest.mark.slow
def test_paper_profile_two_steps_on_bpe_fixture(tmp_path):
    from gapbench.engine.trainer import Trainer, TrainSettings
    from gapbench.registry import get_method_class
    from gapbench.task import BuildRequest

    root = write_synthetic(tmp_path / "wmt", sizes={"train": 40, "valid": 4, "test": 4})
    for f in root.glob("*.??"):  # BPE'd, Moses-tokenised text like fairseq's WMT14
        f.write_text(
            "".join(
                " ".join(
                    w[:3] + "@@ " + w[3:] if len(w) > 4 else w
                    for w in line.replace(",", " ,").split()
                )
                + "\n"
                for line in f.read_text().splitlines()
            )
        )
    task = TranslationTask(**SMALL)
    profile = task.profiles["paper"]
    request = BuildRequest(root, tmp_path, 0, torch.device("cpu"), batch_size=256)
    workload = task.build(profile, request)
    assert workload.extra["bpe_input"]
    settings = TrainSettings(
        epochs=340, sparsity=0.9, distribution="uniform", dense_layers=(), seed=0,
        global_batch=256, max_steps=2,
    )  # fmt: skip
    trainer = Trainer(
        profile,
        workload,
        get_method_class("gap")(partitions=3, rounds=10, epochs_per_step=10),
        settings,
        torch.device("cpu"),
    )
    result = trainer.run()
    assert result.steps_run == 2 and result.stopped_early
    # 2 + 2 layers in thirds: enc0 | enc1 + dec0 | dec1 (6 tensors per encoder, 10 per decoder layer)
    assert [len(g) for g in result.method_log["partitions"]] == [6, 16, 10]
    assert 0.0 <= result.metrics["bleu"] <= 100.0


@pytest.mark.slow
def test_end_to_end_tiny_sparse_run_through_the_cli(tmp_path, capsys):
    import json

    from gapbench.cli import main

    code = main(
        [
            "run",
            "--task",
            "translation",
            "--methods",
            "magnitude",
            "--epochs",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert "| magnitude | uniform | 0.90 |" in capsys.readouterr().out
    record = json.loads(next((tmp_path / "records").glob("*.json")).read_text())
    assert record["status"] == "complete" and record["metric"] == "bleu"
    assert record["alive_prunable_params"] == round(0.1 * record["prunable_params"])
    assert record["task_extra"]["embeddings"] == "dense"
    assert record["policy"]["task_excluded_tensors"] == ["output_proj.weight"]
