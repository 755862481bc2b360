"""gapbench methods inside fairseq (0.12 API): the `gapbench_translation` task, a `--user-dir` plug-in.

    pip install cython && pip install --no-build-isolation fairseq-fixed==0.12.3.1   # see below
    USER_DIR=$(python -c "import gapbench.integrations.fairseq as g; print(g.USER_DIR)")
    fairseq-train data-bin --user-dir $USER_DIR --task gapbench_translation \\
        --gapbench-method gap --gapbench-sparsity 0.9 \\
        --gapbench-method-args '{"partitions": 3, "rounds": 10, "epochs_per_step": 10}' \\
        --gapbench-partitions 'enc0-3|enc4-5,dec0-1|dec2-5' --gapbench-out results/runs \\
        --max-epoch 340 ...
    fairseq-generate data-bin --user-dir $USER_DIR --task gapbench_translation \\
        --path ckpt/checkpoint_last.pt --remove-bpe > gen.out
    python -m gapbench.integrations.fairseq.score gen.out --record ckpt   # sacreBLEU -> record

`USER_DIR` is a folder named `gapbench_fairseq`: fairseq imports a `--user-dir` under its folder
name, which must be globally unique, so this package (named `fairseq`) cannot be the user dir.

The task is fairseq's `translation` task plus hooks (task.py): `begin_epoch` runs the method's
epoch start, `train_step` sets the method up at the first step (when fairseq's optimizer exists),
`optimizer_step` runs the weight step (or skips it on steps a mask update replaces) and the
method's update and epoch end. Masks are enforced by gapbench's MaskEnforcer on the torch optimizer
inside fairseq's optimizer wrapper; the wrapper's `clip_grad_norm` masks gradients first. Method
state travels in fairseq checkpoints through the task's `get_checkpoint_dict` /
`set_checkpoint_dict` (fairseq 0.12's task checkpoint API), so rerunning the same command (fairseq
restores checkpoint_last.pt) continues exactly. A gapbench record is written when the budget's last
epoch ends; `score.py` adds sacreBLEU from `fairseq-generate` output to it.

Only the fairseq-free parts (driver.py, score.py) import without fairseq; task.py needs it.
The install needs Cython first: with --no-build-isolation pip does not fetch fairseq's build
requirements, and without Cython fairseq's .pyx sources are never compiled. A `[fairseq]` extra
would be `fairseq = ["cython", "fairseq-fixed==0.12.3.1"]` (fairseq==0.12.2 does not build on 3.11).
"""

from pathlib import Path

USER_DIR = str(Path(__file__).resolve().parent / "user_dir" / "gapbench_fairseq")
TASK_NAME = "gapbench_translation"
POINTER = "gapbench_record.json"  # in fairseq's --save-dir: where the run's record is
