#!/usr/bin/env bash
# The shipped comparison (results/reference/): every record behind the committed leaderboards.
# Rerunning reuses complete records; `python -m gapbench leaderboard --out results/reference`
# rebuilds the boards and plots from them. A few CPU hours on 2 cores (2 jobs at a time).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/reference}
RUN=(python3 -m gapbench run --device cpu --out "$OUT" --launcher local --jobs "${JOBS:-2}")
SIX=dense,static,magnitude,set,rigl,gap

# Runs whose final weights ship too (export and speed): 90% magnitude and 2:4 runs.
"${RUN[@]}" --task classification --methods magnitude --seeds 0 --save-weights
"${RUN[@]}" --task translation --methods magnitude --seeds 0 --save-weights
"${RUN[@]}" --task classification --methods magnitude,rigl,gap --pattern nm:2:4 --seeds 0 --save-weights
"${RUN[@]}" --task translation --methods magnitude --pattern nm:2:4 --seeds 0 --save-weights

# The headline: every method at 90% uniform, 5 seeds on classification, 3 on the other tasks.
"${RUN[@]}" --task classification --methods $SIX,snip,grasp,synflow,snfs --seeds 0 1 2 3 4
for task in translation partseg detection; do
  "${RUN[@]}" --task "$task" --methods $SIX --seeds 0 1 2
done

# Equal training FLOPs instead of equal epochs (reference: GaP at the profile's budget). Not
# magnitude: no whole number of epochs lands within 5% of GaP's FLOPs (6 epochs: 1.050x, refused);
# its equal-epochs row above is that close.
"${RUN[@]}" --task translation --methods dense,static,set,rigl,gap --seeds 0 1 2 --match flops --match-ref gap

# Classification: the sparsity curve, uniform (3 seeds) and ERK (3 seeds at 90%, seed 0 elsewhere:
# CPU time ran out; add `--seeds 1 2` to complete it).
"${RUN[@]}" --task classification --methods gap,magnitude,rigl,static --seeds 0 1 2 \
  --sparsity 0.8 0.9 0.95 0.98
"${RUN[@]}" --task classification --methods gap,magnitude,rigl,static --seeds 0 1 2 --distribution erk
"${RUN[@]}" --task classification --methods gap,magnitude,rigl,static --seeds 0 \
  --sparsity 0.8 0.95 0.98 --distribution erk

python3 -m gapbench leaderboard --out "$OUT"
