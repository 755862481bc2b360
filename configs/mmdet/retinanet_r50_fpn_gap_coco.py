# RetinaNet R-50-FPN on COCO (mmdet 3.x, 12 epochs), trained sparse FROM SCRATCH with C-GaP:
# kappa = 3 partitions (backbone stages 1-2 | stages 3-4 | FPN neck), 90% uniform sparsity.
#
# What it compares: sparse training from random initialisation (the GaP paper's setting), so
#   - no ImageNet init (the base loads torchvision://resnet50; init_cfg=None here), and
#   - no frozen stages (frozen_stages=-1): GaP grows every partition back at zero, so a frozen,
#     pruned layer could never train (the hook refuses to prune weights that do not train).
# From scratch, 12 epochs are far from converged on COCO; compare methods, not to mmdet's table.
# BatchNorm trains too (norm_eval=False; mmdet's base keeps BN frozen for pretrained backbones).
#
#   TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 python -m gapbench.integrations.mmdet_train \
#       configs/mmdet/retinanet_r50_fpn_gap_coco.py                       # COCO in data/coco/
#   python -m gapbench.integrations.mmdet_train configs/mmdet/retinanet_r50_fpn_gap_coco.py \
#       --shapes data/mmdet_shapes                                        # gapbench's shapes
# Needs mmdet 3.3 with compiled mmcv ops (README, "mmengine hook"); the record lands in
# results/runs/records, next to gapbench's own runs.
_base_ = "mmdet::retinanet/retinanet_r50_fpn_1x_coco.py"

model = dict(
    backbone=dict(init_cfg=None, frozen_stages=-1, norm_eval=False),
)

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
