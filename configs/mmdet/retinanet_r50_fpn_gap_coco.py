# RetinaNet R-50-FPN on COCO (mmdet 3.x, 12 epochs) trained sparse from scratch with C-GaP,
# kappa = 3 partitions (backbone stages 1-2 | stages 3-4 | FPN neck), 90% uniform sparsity.
#   TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 python tools/train.py configs/mmdet/retinanet_r50_fpn_gap_coco.py
# Needs mmdet 3.3 with compiled mmcv ops (see README, "mmengine"); the record lands in
# results/runs/records, next to gapbench's own runs.
_base_ = "mmdet::retinanet/retinanet_r50_fpn_1x_coco.py"

custom_imports = dict(imports=["gapbench.integrations.mmengine"], allow_failed_imports=False)

custom_hooks = [
    dict(
        type="GapbenchSparsityHook",
        method="gap",
        sparsity=0.9,
        distribution="uniform",
        # 12 epochs = 1 round x 3 partitions x 2 epochs per step + 6 fine-tune epochs.
        method_args=dict(partitions=3, rounds=1, epochs_per_step=2, finetune=6),
        partitions=[
            ["backbone.layer1", "backbone.layer2"],
            ["backbone.layer3", "backbone.layer4"],
            ["neck"],
        ],
        # The stem and the detection head (classification/box convs) stay dense.
        prunable=dict(types=["Conv2d"], exclude=["backbone.conv1", "bbox_head"]),
        dense_layers="none",
        task="retinanet_r50_fpn_coco",
        metric="coco/bbox_mAP",
    )
]
