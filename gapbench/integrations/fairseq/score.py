"""sacreBLEU of `fairseq-generate` output, written into the run's gapbench record.

    python -m gapbench.integrations.fairseq.score gen.out --record CHECKPOINT_DIR [--refs FILE]

`gen.out` is fairseq-generate's stdout. Hypotheses are its detokenised `D-<id>` lines (the first
per sentence), taken in sentence order; references are its `T-<id>` lines, or `--refs` (raw text,
one sentence a line in the test set's order; use it for the official sacreBLEU on raw references).
Run fairseq-generate with `--remove-bpe` (and `--tokenizer moses` when the data was Moses-tokenised)
so both sides are plain text. `--record` is the run's record JSON, or fairseq's --save-dir (which
holds gapbench_record.json, a pointer to it). The score lands in `metrics` (the primary metric
`bleu`); the sacreBLEU signature, the file scored and the count in `task_extra`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gapbench.errors import UserError
from gapbench.integrations.fairseq import POINTER
from gapbench.report.atomic import atomic_write_text
from gapbench.report.records import RunRecord


def read_generate_output(path: Path) -> tuple[list[str], list[str]]:
    """(hypotheses, references) in sentence-id order from fairseq-generate output."""
    hyps: dict[int, str] = {}
    refs: dict[int, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        kind, _, rest = line.partition("-")
        if kind not in ("D", "T") or "\t" not in rest:
            continue
        ident, *fields = rest.split("\t")
        if not ident.isdigit():
            continue
        i = int(ident)
        if kind == "D" and i not in hyps:  # D-<id>\t<score>\t<detokenised hypothesis>
            hyps[i] = fields[1] if len(fields) > 1 else ""
        elif kind == "T":  # T-<id>\t<reference>
            refs[i] = fields[0] if fields else ""
    if not hyps:
        raise UserError(f"{path}: no D-<id> hypothesis lines; is it fairseq-generate output?")
    order = sorted(hyps)
    if order != list(range(len(order))):
        raise UserError(
            f"{path}: sentence ids are not 0..{len(order) - 1}; the output is incomplete"
        )
    return [hyps[i] for i in order], [refs.get(i, "") for i in order] if refs else []


def find_record(spec: Path) -> Path:
    if spec.is_dir():
        pointer = spec / POINTER
        if not pointer.is_file():
            raise UserError(f"{spec} holds no {POINTER}: the run has not finished its budget yet")
        spec = Path(json.loads(pointer.read_text())["record"])
    if not spec.is_file():
        raise UserError(f"record {spec} does not exist")
    return spec


def score(
    generate_output: Path, record: Path, refs: Path | None = None, tokenize: str = "13a"
) -> float:
    import sacrebleu

    hyps, gen_refs = read_generate_output(generate_output)
    if refs is not None:
        references = refs.read_text(encoding="utf-8").splitlines()
        source = str(refs)
    else:
        references, source = gen_refs, "fairseq-generate T- lines"
    if len(references) != len(hyps):
        raise UserError(f"{len(hyps)} hypotheses but {len(references)} references ({source})")
    bleu = sacrebleu.metrics.BLEU(tokenize=tokenize)
    result = bleu.corpus_score(hyps, [references])
    path = find_record(record)
    data = json.loads(path.read_text())
    rec = RunRecord.from_dict(data)  # validates the schema before it is rewritten
    rec.metrics = {**rec.metrics, "bleu": round(float(result.score), 2)}
    rec.metric = "bleu"
    if rec.status == "no_metric":  # trained, waiting for its BLEU: now scored
        rec.status, rec.status_reason = "complete", ""
    rec.task_extra = {
        **rec.task_extra,
        "bleu_signature": str(bleu.get_signature()),
        "bleu_hypotheses": str(Path(generate_output).resolve()),
        "bleu_references": source,
        "bleu_sentences": len(hyps),
    }
    atomic_write_text(rec.to_json(), path)
    return float(result.score)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gapbench.integrations.fairseq.score", description=__doc__.split("\n")[0]
    )
    parser.add_argument("generate_output", type=Path, help="fairseq-generate's output file")
    parser.add_argument("--record", type=Path, required=True, help="record JSON or --save-dir")
    parser.add_argument("--refs", type=Path, default=None, help="raw reference file")
    parser.add_argument("--tokenize", default="13a", help="sacreBLEU tokenizer (default 13a)")
    args = parser.parse_args(argv)
    try:
        value = score(args.generate_output, args.record, args.refs, args.tokenize)
    except (UserError, OSError) as exc:
        print(f"gapbench: error: {exc}", file=sys.stderr)
        return 2
    print(f"BLEU = {value:.2f} -> {find_record(args.record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
