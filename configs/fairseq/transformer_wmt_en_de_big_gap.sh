#!/usr/bin/env bash
# GaP on WMT14/16 En-De with fairseq's Transformer-big (pre-norm t2t variant), the paper's schedule
# (Ma et al., ICLR 2022; official code github.com/boone891214/GaP, profile
# 3_step_sequential_gap_sp_0.9), driven by gapbench's `gapbench_translation` fairseq task.
#
#   kappa = 3 partitions: encoder layers 0-3 | encoder 4-5 + decoder 0-1 | decoder 2-5
#   10 rounds x 3 partitions x 10 epochs per grow step = 300 epochs, + 40 fine-tune epochs = 340
#   pruned: q/k/v/out projections and fc1/fc2 of every layer (embeddings and the tied output
#   projection stay dense), 90% sparsity, uniform per layer.
#   Adam (0.9, 0.997) eps 1e-9, lr 8.46e-4 inverse_sqrt with 4000 warm-up updates, dropout 0.1,
#   label smoothing 0.1, no clipping, 5120 tokens x 8 GPUs per update (--update-freq makes up
#   for fewer GPUs).
#
# Data: a joined-dictionary binarised set, e.g. fairseq's examples/translation/prepare-wmt14en2de.sh
# then `fairseq-preprocess --joined-dictionary ...` (--share-all-embeddings needs one dictionary).
# Install: pip install cython && pip install --no-build-isolation fairseq-fixed==0.12.3.1
#
# Usage: DATA=data-bin/wmt16_en_de_bpe32k NGPU=8 bash configs/fairseq/transformer_wmt_en_de_big_gap.sh
#   NGPU       GPUs on this machine (8 / NGPU must be a whole number; default: all visible)
#   SAVE       checkpoint directory (default checkpoints/wmt_en_de_big_gap_sp0.9_seed$SEED)
#   OUT        gapbench results directory (default results/runs)
#   SEED       seed (default 1)
#   AMP=1      mixed precision with --amp (--fp16 is refused: its FP32 master copies escape the masks)
#   REFS       raw reference file for the official sacreBLEU (default: fairseq-generate's T- lines)
#   TOKENIZER  detokeniser for fairseq-generate (default moses, needs sacremoses; empty for none)
#   EXTRA_ARGS appended to fairseq-train (later options win), e.g. "--max-epoch 100" to stop early;
#              rerunning without it continues from checkpoint_last.pt with the method's state.
set -euo pipefail

DATA=${DATA:?set DATA to the binarised WMT En-De directory}
NGPU=${NGPU:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
SEED=${SEED:-1}
SAVE=${SAVE:-checkpoints/wmt_en_de_big_gap_sp0.9_seed$SEED}
OUT=${OUT:-results/runs}
if (( 8 % NGPU != 0 )); then echo "NGPU=$NGPU does not divide the 8-GPU batch" >&2; exit 2; fi
UPDATE_FREQ=$(( 8 / NGPU ))
USER_DIR=$(python -c "import gapbench.integrations.fairseq as g; print(g.USER_DIR)")
TOKENIZER=${TOKENIZER-moses}
PRECISION=()
if [[ "${AMP:-0}" == 1 ]]; then PRECISION=(--amp); fi
export TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1  # fairseq's checkpoints hold more than tensors

fairseq-train "$DATA" \
  --user-dir "$USER_DIR" --task gapbench_translation \
  --arch transformer_wmt_en_de_big_t2t --share-all-embeddings \
  --optimizer adam --adam-betas '(0.9, 0.997)' --adam-eps 1e-9 --weight-decay 0.0 \
  --lr 8.46e-4 --lr-scheduler inverse_sqrt --warmup-updates 4000 --warmup-init-lr 1e-07 \
  --dropout 0.1 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
  --clip-norm 0.0 --max-tokens 5120 --update-freq "$UPDATE_FREQ" \
  --max-epoch 340 --seed "$SEED" --save-dir "$SAVE" --keep-last-epochs 2 \
  --gapbench-method gap --gapbench-sparsity 0.9 --gapbench-distribution uniform \
  --gapbench-method-args '{"partitions": 3, "rounds": 10, "epochs_per_step": 10, "finetune": 40}' \
  --gapbench-partitions 'enc0-3|enc4-5,dec0-1|dec2-5' \
  --gapbench-dense-layers none --gapbench-task-name wmt_en_de_big --gapbench-out "$OUT" \
  "${PRECISION[@]}" ${EXTRA_ARGS:-}

if [[ ! -f "$SAVE/gapbench_record.json" ]]; then
  echo "the 340-epoch budget is not complete yet: rerun to continue from $SAVE/checkpoint_last.pt"
  exit 0
fi

# Test set (newstest2014), beam 4, length penalty 0.6 (Vaswani et al. / fairseq's WMT recipe).
fairseq-generate "$DATA" --user-dir "$USER_DIR" --task gapbench_translation \
  --path "$SAVE/checkpoint_last.pt" --gen-subset test --beam 4 --lenpen 0.6 \
  --batch-size 128 --remove-bpe ${TOKENIZER:+--tokenizer "$TOKENIZER"} > "$SAVE/generate-test.txt"
python -m gapbench.integrations.fairseq.score "$SAVE/generate-test.txt" --record "$SAVE" \
  ${REFS:+--refs "$REFS"}
python -m gapbench leaderboard --out "$OUT"
