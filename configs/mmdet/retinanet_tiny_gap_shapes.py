# A small RetinaNet from mmdet's own config (ResNet-18 at 16 base channels, 32-channel FPN and
# head, 128 px images) for gapbench's embedded shapes: the CI lane (tests/test_mmdet.py) and
# CPU smoke runs. Same hook and partitions as the R-50 config, 3 epochs (1 per GaP partition).
#   python -m gapbench.integrations.mmdet_train configs/mmdet/retinanet_tiny_gap_shapes.py \
#       --shapes data/mmdet_shapes
_base_ = "./retinanet_r50_fpn_gap_coco.py"

model = dict(
    backbone=dict(depth=18, base_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    bbox_head=dict(in_channels=32, feat_channels=32, stacked_convs=1),
    # Every box scored above 0 is kept, so even a few steps give a finite COCO mAP.
    test_cfg=dict(score_thr=0.0, max_per_img=50),
)
_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True),
    dict(type="Resize", scale=(128, 128), keep_ratio=True),
    # No RandomFlip: with num_workers=0 mmengine does not restore the main process's numpy RNG on
    # resume, so a flipped batch would differ after resuming (workers are reseeded every epoch).
    dict(type="PackDetInputs"),
]
_test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(128, 128), keep_ratio=True),
    dict(type="LoadAnnotations", with_bbox=True),
    dict(
        type="PackDetInputs",
        meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"),
    ),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False, dataset=dict(pipeline=_pipeline)
)
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False, dataset=dict(pipeline=_test_pipeline)
)
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=3, val_interval=3)
param_scheduler = [
    dict(type="MultiStepLR", begin=0, end=3, by_epoch=True, milestones=[2], gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=0.01), clip_grad=None)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
custom_hooks = [
    dict(
        type="GapbenchSparsityHook",
        method="gap",
        sparsity=0.9,
        method_args=dict(partitions=3, rounds=1, epochs_per_step=1, finetune=0),
        partitions=[
            ["backbone.layer1", "backbone.layer2"],
            ["backbone.layer3", "backbone.layer4"],
            ["neck"],
        ],
        prunable=dict(types=["Conv2d"], exclude=["backbone.conv1", "bbox_head"]),
        task="retinanet_tiny_shapes",
        metric="coco/bbox_mAP",
    )
]
# A fixed seed: a resumed run then replays the same augmentation and is bit-identical.
randomness = dict(seed=0, deterministic=True)
