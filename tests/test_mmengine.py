"""The mmengine hook: a Runner trains with GaP through GapbenchSparsityHook at exact sparsity,
resumes from its checkpoint identically, and leaves a record the leaderboard shows."""

import json

import pytest
import torch
from torch import nn

mmengine = pytest.importorskip("mmengine", reason="the [mmengine] extra is not installed")
from mmengine.evaluator import BaseMetric  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import gapbench.integrations.mmengine  # noqa: E402,F401  (registers the hook)
from gapbench.report.leaderboard import write_leaderboard  # noqa: E402


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


class Shapes(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 8, 8, generator=gen)
        self.y = (self.x.mean((1, 2, 3)) > 0).long() + 2 * (self.x[:, 0].mean((1, 2)) > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"inputs": self.x[i], "labels": int(self.y[i])}


def _runner(work_dir, out, resume_from=None):
    loader = dict(
        sampler=dict(type="DefaultSampler", shuffle=True),
        batch_size=16,
        collate_fn=dict(type="default_collate"),
    )
    return Runner(
        model=Toy(), work_dir=str(work_dir), experiment_name="toy_gap",
        train_dataloader=dict(dataset=Shapes(128, 0), **loader),
        val_dataloader=dict(dataset=Shapes(64, 1), **{**loader, "sampler": dict(type="DefaultSampler", shuffle=False)}),
        val_evaluator=[Accuracy()], val_cfg=dict(),
        train_cfg=dict(by_epoch=True, max_epochs=4, val_interval=4),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.05, momentum=0.9), clip_grad=dict(max_norm=5.0)),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1), logger=dict(type="LoggerHook", interval=100)),
        custom_hooks=[dict(
            type="GapbenchSparsityHook", method="gap", sparsity=0.75, method_args=dict(partitions=2, rounds=1),
            prunable=dict(types=["Conv2d", "Linear"], exclude=["head"]), dense_layers="first", out=str(out), task="toy",
        )],
        randomness=dict(seed=0, deterministic=True),
        resume=resume_from is not None, load_from=resume_from,
    )  # fmt: skip


@pytest.mark.slow
def test_gap_through_the_hook_is_exact_resumes_identically_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    straight = _runner(tmp_path / "a", tmp_path / "out")
    straight.train()
    hook = next(h for h in straight.hooks if type(h).__name__ == "GapbenchSparsityHook")
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

    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "out" / "records").glob("*.json")]
    assert record["profile"] == "mmengine" and record["metric"] == "accuracy"
    assert record["alive_prunable_params"] == round(0.25 * record["prunable_params"])
    table = write_leaderboard(tmp_path / "out")
    assert "## toy (mmengine, 4 epochs)" in (tmp_path / "out" / "leaderboard.md").read_text()
    assert table.iloc[0]["method"] == "gap"
