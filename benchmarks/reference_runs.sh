#!/usr/bin/env bash
# The shipped boards (results/reference/): every record behind the committed leaderboards, on the
# `bench` profiles (dense converged at the budget, the methods' own schedules in miniature; check
# with `python -m gapbench check-board`). About 1000 run-minutes on 2 cores, so it runs in
# batches, resumable: every run whose complete (or diverged) record exists is skipped, so a batch
# interrupted anywhere continues where it stopped. Commit each batch's records as it completes.
#
#   benchmarks/reference_runs.sh --list                      # the batches, in order
#   benchmarks/reference_runs.sh headline-classification     # one or more batches
#   benchmarks/reference_runs.sh                             # every batch, in order
#   JOBS=2 SEEDS="0 1 2 3 4" benchmarks/reference_runs.sh headline-partseg
#   MULTIPLIERS=2 benchmarks/reference_runs.sh budget-partseg  # one budget column first
#   DRY_RUN=1 benchmarks/reference_runs.sh                   # print every run command
#
# Two runs go side by side with one torch thread each (`--launcher local --jobs 2`); on 2 cores
# more at once made every run 5-17x slower. Run one invocation at a time: two side by side (JOBS=1
# each) oversubscribe the cores unless OMP_NUM_THREADS=1 is set.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/reference}
PROFILE=${PROFILE:-bench}
RUN=(python3 -m gapbench run --device cpu --profile "$PROFILE" --out "$OUT" --launcher local
  --jobs "${JOBS:-2}")
[ -n "${DRY_RUN:-}" ] && RUN=(echo "${RUN[@]}")  # print the runs, train nothing
SIX=dense,static,magnitude,set,rigl,gap
ALL=$SIX,snip,grasp,synflow,snfs
BUDGET_METHODS=dense,magnitude,gap,rigl,static

# The profile's headline sparsity (options["headline_sparsity"], 0.9 unless it says).
headline() {
  python3 -c "from gapbench.cli import headline_sparsity; print(headline_sparsity('$1', '$PROFILE'))"
}
# Seeds: 5 on classification (ten methods to separate), 3 elsewhere unless SEEDS says.
seeds() { if [ "$1" = classification ]; then echo "${SEEDS:-0 1 2 3 4}"; else echo "${SEEDS:-0 1 2}"; fi; }

batch_headline() {  # every method at the headline sparsity, uniform
  local task=$1 methods=$SIX
  [ "$task" = classification ] && methods=$ALL
  # shellcheck disable=SC2046
  "${RUN[@]}" --task "$task" --methods "$methods" --sparsity "$(headline "$task")" --seeds $(seeds "$task")
}
batch_ninety() {  # the 90% point with every headline method, 5 seeds (where 95% is the headline)
  "${RUN[@]}" --task "$1" --methods "$SIX" --sparsity 0.9 --seeds ${SEEDS:-0 1 2 3 4}
}
batch_dense2x() {  # dense at twice the budget: has dense converged?
  # shellcheck disable=SC2046
  "${RUN[@]}" --task "$1" --methods dense --multiplier 2 --seeds $(seeds "$1")
}
batch_budget() {  # the budget axis: does GaP's standing change with the budget?
  # shellcheck disable=SC2086
  "${RUN[@]}" --task "$1" --methods "$BUDGET_METHODS" --sparsity "$(headline "$1")" \
    --multiplier ${MULTIPLIERS:-1 2 4} --seeds ${SEEDS:-0 1 2}
}
batch_curve() {  # the sparsity curve, around the headline
  "${RUN[@]}" --task "$1" --methods gap,magnitude,rigl,static --sparsity 0.8 0.9 0.95 0.98 \
    --seeds ${SEEDS:-0 1 2}
}
batch_erk() {  # the headline point under ERK (RigL's layer densities): does the ranking hold?
  "${RUN[@]}" --task "$1" --methods gap,magnitude,rigl,static --sparsity "$(headline "$1")" \
    --distribution erk --seeds ${SEEDS:-0 1 2}
}
batch_global() {  # pruning at initialisation as its papers rank, globally; GMP ranked alike beside it
  "${RUN[@]}" --task "$1" --methods magnitude,snip,grasp,synflow --sparsity "$(headline "$1")" \
    --distribution global --seeds ${SEEDS:-0 1 2}
}
batch_flops() {  # equal training FLOPs (dense included), reference GaP at the profile's budget
  "${RUN[@]}" --task "$1" --methods "$SIX" --sparsity "$(headline "$1")" --seeds ${SEEDS:-0 1 2} \
    --match flops --match-ref gap
}
batch_weights() {  # runs whose final weights ship too (export and speed): magnitude and 2:4
  "${RUN[@]}" --task "$1" --methods magnitude --sparsity "$(headline "$1")" --seeds 0 --save-weights
  "${RUN[@]}" --task "$1" --methods magnitude,rigl,gap --pattern nm:2:4 --seeds 0 --save-weights
}

BATCHES=(
  headline-classification headline-partseg headline-detection headline-translation ninety-partseg
  dense2x-classification dense2x-partseg dense2x-detection dense2x-translation
  budget-classification budget-partseg
  flops-translation curve-classification weights-classification weights-translation
  erk-classification global-classification flops-classification
)

if [ "${1:-}" = --list ]; then
  printf '%s\n' "${BATCHES[@]}"
  exit 0
fi
[ $# -eq 0 ] && set -- "${BATCHES[@]}"
for batch in "$@"; do
  kind=${batch%%-*} task=${batch#*-}
  if ! declare -F "batch_$kind" >/dev/null || [ "$kind" = "$batch" ]; then
    echo "unknown batch $batch; see --list" >&2
    exit 2
  fi
  echo "== $batch"
  "batch_$kind" "$task"
done
[ -n "${DRY_RUN:-}" ] && exit 0
python3 -m gapbench leaderboard --out "$OUT"
python3 -m gapbench check-board --out "$OUT" --profile "$PROFILE" || true
