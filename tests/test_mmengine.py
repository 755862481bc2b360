"""The mmengine hook: a Runner trains every built-in method through GapbenchSparsityHook to exact
weight sparsity (with and without clip_grad), resumes identically under the same run id, refuses
to prune what does not train, and leaves a record the leaderboard shows, or says why it has no
metric."""

import json
import warnings

import pytest
import torch
from torch import nn

mmengine = pytest.importorskip("mmengine", reason="the [mmengine] extra is not installed")
from mmengine.evaluator import BaseMetric  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import gapbench.integrations.mmengine  # noqa: E402,F401  (registers the hook)
from gapbench.errors import UserError  # noqa: E402
from gapbench.registry import all_methods  # noqa: E402
from gapbench.report.leaderboard import write_leaderboard  # noqa: E402
from gapbench.sparse.distribution import total_keep  # noqa: E402
from gapbench.sparse.enforce import count_weights  # noqa: E402


class Toy(BaseModel):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.neck = nn.Linear(64, 32)
        self.head = nn.Linear(32, 4)

    def forward(self, inputs, labels, mode="tensor"):
        logits = self.head(
            torch.relu(
                self.neck(
                    self.backbone(torch.stack(inputs) if isinstance(inputs, list) else inputs)
                )
            )
        )
        labels = torch.as_tensor(labels)
        if mode == "loss":
            return {"loss": nn.functional.cross_entropy(logits, labels)}
        if mode == "predict":
            return list(zip(logits.argmax(1), labels))
        return logits


class Accuracy(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results += [float(p == t) for p, t in data_samples]

    def compute_metrics(self, results):
        return {"accuracy": 100.0 * sum(results) / len(results)}


class Nothing(BaseMetric):
    """An evaluator that yields no metric (as mmdet's CocoMetric does when no box is output)."""

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        return {}


class Shapes(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 8, 8, generator=gen)
        self.y = (self.x.mean((1, 2, 3)) > 0).long() + 2 * (self.x[:, 0].mean((1, 2)) > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"inputs": self.x[i], "labels": int(self.y[i])}


GAP = dict(method="gap", method_args=dict(partitions=2, rounds=1))


def _runner(
    work_dir,
    out,
    resume_from=None,
    hook=GAP,
    clip=True,
    evaluator=Accuracy,
    freeze=False,
    accumulate=1,
):
    loader = dict(
        sampler=dict(type="DefaultSampler", shuffle=True),
        batch_size=16,
        collate_fn=dict(type="default_collate"),
    )
    model = Toy()
    if freeze:  # as mmdet's frozen_stages does
        for p in model.backbone[3].parameters():
            p.requires_grad = False
    optim = dict(optimizer=dict(type="SGD", lr=0.05, momentum=0.9))
    if clip:
        optim["clip_grad"] = dict(max_norm=5.0)
    if accumulate > 1:
        optim["accumulative_counts"] = accumulate
    return Runner(
        model=model, work_dir=str(work_dir), experiment_name="toy_gap",
        train_dataloader=dict(dataset=Shapes(128, 0), **loader),
        val_dataloader=dict(dataset=Shapes(64, 1), **{**loader, "sampler": dict(type="DefaultSampler", shuffle=False)}),
        val_evaluator=[evaluator()], val_cfg=dict(),
        train_cfg=dict(by_epoch=True, max_epochs=4, val_interval=4),
        optim_wrapper=optim,
        param_scheduler=[dict(type="MultiStepLR", milestones=[3], by_epoch=True)],
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1), logger=dict(type="LoggerHook", interval=100)),
        custom_hooks=[dict(
            type="GapbenchSparsityHook", sparsity=0.75, **hook,
            prunable=dict(types=["Conv2d", "Linear"], exclude=["head"]), dense_layers="first", out=str(out), task="toy",
        )],
        randomness=dict(seed=0, deterministic=True),
        resume=resume_from is not None, load_from=resume_from,
    )  # fmt: skip


def _hook(runner):
    return next(h for h in runner.hooks if type(h).__name__ == "GapbenchSparsityHook")


def _records(out):
    return [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]


# oneshot trains twice its budget (dense, then sparse): the hook refuses it (tested below).
METHODS = sorted(set(all_methods()) - {"oneshot"})
# Methods whose kept weights all train here. SET regrows at zero from inputs that a dead toy
# unit never feeds, so some kept weights stay exactly zero: the record counts them as pruned.
EXACT = {"gap", "rigl", "magnitude", "static", "snip", "grasp", "synflow", "snfs"}


@pytest.mark.slow
@pytest.mark.parametrize("clip", [False, True], ids=["no_clip", "clip"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_ends_at_exact_weight_sparsity(tmp_path, method, clip):
    """The weights, not only the masks: every pruned weight is exactly zero and the record's
    measured sparsity counts nonzero weights (RigL without clip_grad once left 84% of them)."""
    hook = GAP if method == "gap" else dict(method=method)  # the toy has 2 prunable tensors
    runner = _runner(tmp_path / "w", tmp_path / "out", hook=hook, clip=clip)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*overridden after parameter value scheduler")
        runner.train()
    (record,) = _records(tmp_path / "out")
    assert record["status"] == "complete" and record["metric"] == "accuracy"
    if method == "dense":
        assert record["measured_sparsity"] == 0.0
        return
    masks = _hook(runner).masks
    weights = count_weights(masks)
    assert not any(weights.leaked.values()), weights.leaked
    expected = total_keep([masks.numel(n) for n in masks.names], 0.75)
    alive_zero = sum(weights.alive_zero.values())
    assert weights.total_nonzero + alive_zero == expected == masks.alive()
    if method in EXACT:
        assert alive_zero == 0  # every kept weight trained away from zero
    assert record["alive_prunable_params"] == weights.total_nonzero
    assert record["task_extra"]["alive_zero_weights"] == alive_zero
    nonzero = weights.total_nonzero
    assert record["measured_sparsity"] == pytest.approx(1 - nonzero / masks.total(), abs=1e-12)
    assert {n: v["alive"] for n, v in record["per_layer"].items()} == weights.nonzero


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [1, 2])
def test_flops_price_every_sample_once(tmp_path, accumulate):
    """128 samples x 4 epochs: the dense cost of the steps run is the budget's, with gradient
    accumulation too (every iteration's forward and backward is charged, not only the one whose
    optimizer step follows: that priced half of them)."""
    runner = _runner(
        tmp_path / "w", tmp_path / "out", hook=dict(method="static"), accumulate=accumulate
    )
    runner.train()
    (record,) = _records(tmp_path / "out")
    flops = record["flops"]
    assert record["budget"]["steps_run"] == 4 * 8 // accumulate
    assert flops["dense_train_budget"] == pytest.approx(3 * 128 * 4 * flops["dense_inference"])
    assert flops["dense_train_same_steps"] == pytest.approx(flops["dense_train_budget"], rel=1e-12)
    assert flops["train"] == pytest.approx(3 * 128 * 4 * flops["inference"], rel=1e-12)


def test_seeds_of_one_config_share_its_hash():
    """The board's seeds pool in one row: mmengine's randomness seed is left out of the config
    hash when it is the hook's seed, and kept when it differs (another run, another row)."""
    from mmengine.config import Config

    from gapbench.integrations.mmengine import config_hash

    def cfg(
        seed: int, hook_seed: int | None = None, sparsity: float = 0.9, method: str = "gap"
    ) -> Config:
        hook = dict(type="GapbenchSparsityHook", method=method, sparsity=sparsity, seed=seed)
        if hook_seed is not None:
            hook["seed"] = hook_seed
        return Config(
            dict(
                model=dict(depth=18),
                randomness=dict(seed=seed, deterministic=True),
                custom_hooks=[hook],
            )
        )

    assert config_hash(cfg(0), 0) == config_hash(cfg(1), 1)
    assert config_hash(cfg(1, hook_seed=0), 0) != config_hash(cfg(0), 0)
    # Method, its arguments and sparsity are identity fields of their own: one configuration
    # hashes the same whichever method the hook runs, so the board pairs methods on it.
    assert config_hash(cfg(0, sparsity=0.8), 0) == config_hash(cfg(0), 0)
    assert config_hash(cfg(0, method="magnitude"), 0) == config_hash(cfg(0), 0)
    deeper = Config(dict(model=dict(depth=50), randomness=dict(seed=0, deterministic=True)))
    assert config_hash(deeper, 0) != config_hash(cfg(0), 0)
    assert config_hash(cfg(0), 0) != config_hash(
        Config(dict(model=dict(depth=18), randomness=dict(seed=0, deterministic=False))), 0
    )


def test_oneshot_is_refused_with_a_reason(tmp_path):
    runner = _runner(tmp_path / "w", tmp_path / "out", hook=dict(method="oneshot"))
    with pytest.raises(UserError, match="trains 8 epochs on a budget of 4"):
        runner.train()


def test_pruning_a_frozen_layer_is_refused(tmp_path):
    runner = _runner(tmp_path / "w", tmp_path / "out", freeze=True)
    with pytest.raises(UserError, match=r"do not train.*requires_grad=False.*backbone\.3\.weight"):
        runner.train()


@pytest.mark.slow
def test_a_run_without_a_metric_says_why_and_the_board_still_builds(tmp_path):
    runner = _runner(
        tmp_path / "w", tmp_path / "out", hook=dict(method="static"), evaluator=Nothing
    )
    runner.train()
    (record,) = _records(tmp_path / "out")
    assert record["status"] == "no_metric" and record["metrics"] == {}
    assert "returned no metric" in record["task_extra"]["no_metric_reason"]
    write_leaderboard(tmp_path / "out")  # skipped, not a KeyError


@pytest.mark.slow
def test_gap_through_the_hook_is_exact_resumes_identically_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    straight = _runner(tmp_path / "a", tmp_path / "out")
    straight.train()
    hook = _hook(straight)
    masks = hook.masks
    assert masks.names == ["backbone.3.weight", "neck.weight"]  # first conv dense, head excluded
    assert masks.alive() == round(0.25 * masks.total())
    for name in masks.names:
        assert torch.all(masks.params[name][~masks.masks[name]] == 0)
    assert hook.method.log["schedule"][0]["grown"] == ["backbone.3.weight"]
    final = {k: v.clone() for k, v in straight.model.state_dict().items()}

    resumed = _runner(
        tmp_path / "b", tmp_path / "out_b", resume_from=str(tmp_path / "a" / "epoch_1.pth")
    )
    resumed.train()
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, final[key]), key

    (record,) = _records(tmp_path / "out")
    (again,) = _records(tmp_path / "out_b")
    assert again["run_id"] == record["run_id"]  # how a run was started is not what it is
    assert again["task_extra"]["resumed"] and not record["task_extra"]["resumed"]
    assert record["profile"] == "mmengine" and record["metric"] == "accuracy"
    assert record["alive_prunable_params"] == round(0.25 * record["prunable_params"])
    table = write_leaderboard(tmp_path / "out")
    assert "## toy (mmengine, 4 epochs)" in (tmp_path / "out" / "leaderboard.md").read_text()
    assert table.iloc[0]["method"] == "gap"
