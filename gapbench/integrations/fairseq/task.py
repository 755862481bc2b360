"""The `gapbench_translation` fairseq task: fairseq's translation task driving a gapbench method.

Load it with `--user-dir` (gapbench.integrations.fairseq.USER_DIR) and `--task gapbench_translation`;
see the package docstring. The logic lives in driver.py; this file is the fairseq (0.12 API) glue.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import II, OmegaConf

from gapbench.errors import UserError
from gapbench.integrations.fairseq import TASK_NAME
from gapbench.integrations.fairseq.driver import DEFAULT_PRUNABLE, STATE_KEY, Driver, Options

logger = logging.getLogger("gapbench.fairseq")

# Settings hashed into a run's identity besides the task's own (paths and outputs left out).
_NOT_HASHED = {
    "data", "gapbench_out", "gapbench_epochs", "gb_max_epoch", "gb_save_dir", "gb_restore_file",
    "gb_checkpoint_suffix", "_name",
}  # fmt: skip


@dataclass
class GapbenchTranslationConfig(TranslationConfig):
    gapbench_method: str = field(default="gap", metadata={"help": "gapbench method name"})
    gapbench_sparsity: float = field(default=0.9, metadata={"help": "target sparsity"})
    gapbench_distribution: str = field(
        default="uniform", metadata={"help": "per-layer sparsity distribution (uniform, erk, ...)"}
    )
    gapbench_method_args: str = field(
        default="{}", metadata={"help": "method parameters as a JSON object"}
    )
    # Optional[...], not `X | None`: fairseq's dataclass-to-argparse bridge reads typing.Optional.
    gapbench_partitions: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "GaP partitions as module prefixes: '|' between partitions, ',' between "
            "prefixes; encN-M / decN-M = encoder/decoder layers N..M"
        },
    )
    gapbench_prunable: str = field(
        default=DEFAULT_PRUNABLE,
        metadata={"help": "comma-separated Linear module names (last component) that are pruned"},
    )
    gapbench_exclude: str = field(
        default="", metadata={"help": "comma-separated module prefixes kept dense"}
    )
    gapbench_dense_layers: str = field(
        default="none", metadata={"help": "end layers kept dense: first, last, first,last, none"}
    )
    gapbench_pattern: str = field(default="unstructured", metadata={"help": "sparsity pattern"})
    gapbench_epochs: int = field(
        default=0, metadata={"help": "the budget in epochs (0: --max-epoch); a larger budget "
                             "than --max-epoch stops early and resumes with a larger --max-epoch"}
    )  # fmt: skip
    gapbench_out: str = field(default="results/runs", metadata={"help": "gapbench results dir"})
    gapbench_task_name: Optional[str] = field(  # noqa: UP045
        default=None, metadata={"help": "task name in the record (default fairseq-<data dir>)"}
    )
    gapbench_plugins: str = field(
        default="", metadata={"help": "comma-separated gapbench plug-ins (.py files or modules)"}
    )
    # fairseq's settings the driver reads (interpolated from the full config, no new options).
    # Typed Any: fairseq's argparse bridge would turn a bool-typed '${...}' into True.
    gb_max_epoch: Any = II("optimization.max_epoch")
    gb_max_update: Any = II("optimization.max_update")
    gb_update_freq: Any = II("optimization.update_freq")
    gb_clip_norm: Any = II("optimization.clip_norm")
    gb_lr: Any = II("optimization.lr")
    gb_max_tokens: Any = II("dataset.max_tokens")
    gb_seed: Any = II("common.seed")
    gb_fp16: Any = II("common.fp16")
    gb_bf16: Any = II("common.bf16")
    gb_memory_efficient_fp16: Any = II("common.memory_efficient_fp16")
    gb_amp: Any = II("common.amp")
    gb_save_dir: Any = II("checkpoint.save_dir")
    gb_restore_file: Any = II("checkpoint.restore_file")
    gb_checkpoint_suffix: Any = II("checkpoint.checkpoint_suffix")
    gb_ddp_backend: Any = II("distributed_training.ddp_backend")


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    try:
        value = getattr(cfg, key)
    except Exception:  # an interpolation that does not resolve (e.g. outside fairseq-train)
        return default
    return default if value is None else value


@register_task(TASK_NAME, dataclass=GapbenchTranslationConfig)
class GapbenchTranslationTask(TranslationTask):
    """fairseq's translation task with a gapbench sparse-training method."""

    cfg: GapbenchTranslationConfig

    def __init__(self, cfg: GapbenchTranslationConfig, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self.driver: Driver | None = None
        self._train_itr = None
        self._checkpoint_state: dict | None = None

    # ---- the driver, built lazily: fairseq-generate sets the task up without training options ----
    def _driver(self) -> Driver:
        if self.driver is not None:
            return self.driver
        cfg = self.cfg
        if (
            _get(cfg, "gb_fp16", False)
            or _get(cfg, "gb_bf16", False)
            or _get(cfg, "gb_memory_efficient_fp16", False)
        ):
            raise UserError(
                "gapbench_translation does not support --fp16/--bf16/--memory-efficient-fp16: "
                "fairseq's FP16Optimizer steps FP32 master copies that gapbench's masks do not "
                "cover; train in FP32 or with --amp"
            )
        if _get(cfg, "gb_ddp_backend", "") == "fully_sharded":
            raise UserError("gapbench_translation does not support --ddp-backend fully_sharded")
        config = {}
        try:
            container = (
                OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else vars(cfg)
            )
            config = {k: v for k, v in container.items() if k not in _NOT_HASHED}
        except Exception:  # noqa: BLE001 - a config that does not resolve is hashed as text
            config = {"cfg": str(cfg)}
        opts = Options(
            method=cfg.gapbench_method, sparsity=float(cfg.gapbench_sparsity),
            distribution=cfg.gapbench_distribution, method_args=cfg.gapbench_method_args,
            partitions=cfg.gapbench_partitions, prunable=cfg.gapbench_prunable,
            exclude=cfg.gapbench_exclude, dense_layers=cfg.gapbench_dense_layers,
            pattern=cfg.gapbench_pattern, epochs=int(cfg.gapbench_epochs), out=cfg.gapbench_out,
            task_name=cfg.gapbench_task_name, plugins=cfg.gapbench_plugins,
            max_epoch=int(_get(cfg, "gb_max_epoch", 0)), max_update=int(_get(cfg, "gb_max_update", 0)),
            seed=int(_get(cfg, "gb_seed", 1)), save_dir=str(_get(cfg, "gb_save_dir", "checkpoints")),
            data=cfg.data, config=config,
        )  # fmt: skip
        self.driver = Driver(opts)
        if self._checkpoint_state:
            self.driver.load_checkpoint_dict(self._checkpoint_state)
        return self.driver

    def _update_freq(self, epoch: int) -> int:
        freq = _get(self.cfg, "gb_update_freq", [1])
        freq = list(freq) if not isinstance(freq, int) else [freq]
        return int(freq[epoch - 1] if epoch <= len(freq) else freq[-1])

    def _checkpoint_path(self) -> str:
        """The checkpoint fairseq restored (fairseq.checkpoint_utils.load_checkpoint's rule)."""
        save_dir = _get(self.cfg, "gb_save_dir", "checkpoints")
        restore = _get(self.cfg, "gb_restore_file", "checkpoint_last.pt")
        suffix = _get(self.cfg, "gb_checkpoint_suffix", "")
        if restore == "checkpoint_last.pt":
            return os.path.join(save_dir, f"checkpoint_last{suffix}.pt")
        return restore.replace(".pt", suffix + ".pt") if suffix else restore

    def _state_from_checkpoint(self) -> dict | None:
        path = self._checkpoint_path()
        if not os.path.isfile(path):
            return None
        state = torch.load(path, map_location="cpu", weights_only=False)
        return state.get("extra_state", {}).get(type(self).__name__, {}).get(STATE_KEY)

    # ---- fairseq hooks ---------------------------------------------------------------------------
    def build_model(self, cfg, from_checkpoint=False):
        if not from_checkpoint:  # fairseq-train: check the options before anything is built
            self._driver()
        return super().build_model(cfg, from_checkpoint)

    def get_batch_iterator(self, dataset, *args, **kwargs):
        itr = super().get_batch_iterator(dataset, *args, **kwargs)
        if dataset is self.datasets.get(self.cfg.train_subset):
            self._train_itr = itr
        return itr

    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        self._driver().begin_epoch(epoch)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        driver = self._driver()
        if not driver.ready:
            itr = self._train_itr
            if itr is None:
                raise RuntimeError("gapbench: the training epoch iterator was never built")
            inner = model
            while hasattr(inner, "module"):  # DDP wrappers
                inner = inner.module
            rank, world = 0, 1
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
            driver.ensure_setup(
                inner, optimizer, len(itr), self._update_freq(itr.epoch), update_num,
                self._state_from_checkpoint, (rank, world),
            )  # fmt: skip
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def optimizer_step(self, optimizer, model, update_num):
        driver = self._driver()
        if not driver.ready:  # no train_step ran (cannot happen in fairseq-train)
            return super().optimizer_step(optimizer, model, update_num)
        itr = self._train_itr
        end = itr is not None and itr.end_of_epoch()
        driver.optimizer_step(optimizer, update_num, end)

    def begin_valid_epoch(self, epoch, model):
        super().begin_valid_epoch(epoch, model)
        if self.driver is not None:
            self.driver.valid_begin()

    def valid_step(self, sample, model, criterion):
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        if self.driver is not None:
            self.driver.valid_log(logging_output)
        return loss, sample_size, logging_output

    # fairseq 0.12's task checkpoint API: merged into the checkpoint's extra_state under the task's
    # class name, handed back through set_checkpoint_dict when the checkpoint is restored.
    def get_checkpoint_dict(self) -> dict[str, Any]:
        state = self.driver.checkpoint_dict() if self.driver is not None else self._checkpoint_state
        return {type(self).__name__: {STATE_KEY: state or {}}}

    def set_checkpoint_dict(self, state: dict[str, Any]) -> None:
        self._checkpoint_state = state.get(STATE_KEY) or None
        if self.driver is not None and self._checkpoint_state:
            self.driver.load_checkpoint_dict(self._checkpoint_state)
