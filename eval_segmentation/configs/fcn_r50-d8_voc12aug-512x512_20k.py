# FCN with a ResNet-50 dilated to output stride 8 on PASCAL VOC 2012 train + aug (10,582 images),
# 512 x 512 crops, 20k iterations, batch 16, SGD lr 0.01 / wd 5e-4 / poly, SyncBN; mIoU on val.
# The LEWEL paper's segmentation transfer (Table 3): mmsegmentation's
# `fcn_r50-d8_4xb4-20k_voc12aug-512x512` with ONE change that matters: the backbone is mmseg's `ResNet`
# (torchvision 7x7 stem, the network every SSL method pretrains) instead of `ResNetV1c` (deep stem),
# with no `pretrained` and an explicit `init_cfg` checkpoint made by `tools/convert_to_mmseg.py`.
# Self-contained (no `_base_`), mmseg's own Python config format; run through
# `python -m eval_segmentation` (see eval_segmentation/cli.py), which fills in the checkpoint, the
# data root, the per-process batch and the launcher.

custom_imports = dict(imports=['eval_segmentation.mmseg_ext'], allow_failed_imports=False)
default_scope = 'mmseg'

# ---- lewel-bench keys (read by eval_segmentation.cli; mmengine ignores them) ----
lewel_protocol = 'fcn_d8_20k'
lewel_dataset = 'voc2012_aug'
total_batch_size = 16  # the CLI sets train_dataloader.batch_size = total_batch_size / processes
backbone_checkpoint = None  # the converted checkpoint; set by the CLI (model.backbone.init_cfg.checkpoint)

# ---- model ----
norm_cfg = dict(type='SyncBN', requires_grad=True)  # mmengine turns SyncBN into BN in one process
crop_size = (512, 512)
num_classes = 21
data_preprocessor = dict(
    type='SegDataPreProcessor',
    size=crop_size,
    # torchvision normalisation (RGB), what the SSL backbones were pretrained with
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='ResNet',  # NOT ResNetV1c: torchvision stem, torchvision key names
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        contract_dilation=True,
        init_cfg=dict(type='Pretrained', checkpoint=backbone_checkpoint)),
    decode_head=dict(
        type='FCNHead',
        in_channels=2048,
        in_index=3,
        channels=512,
        num_convs=2,
        concat_input=True,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=1024,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

# ---- data: VOC2012 train (SegmentationClass) + aug (SBD, SegmentationClassAug) ----
dataset_type = 'PascalVOCDataset'
data_root = 'data/VOCdevkit/VOC2012'  # the CLI's --data replaces every data_root
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='Pad', size=crop_size),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations'),  # after Resize: the metric uses the original-size labels
    dict(type='PackSegInputs')
]
dataset_train = dict(
    type=dataset_type,
    data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    ann_file='ImageSets/Segmentation/train.txt',
    pipeline=train_pipeline)
dataset_aug = dict(
    type=dataset_type,
    data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
    ann_file='ImageSets/Segmentation/aug.txt',
    pipeline=train_pipeline)
train_dataloader = dict(
    batch_size=4,  # per process; the CLI derives it from total_batch_size
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='ConcatDataset', datasets=[dataset_train, dataset_aug]))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# mmseg's IoUMetric (mIoU, aAcc), also returning the per-class IoU it logs (eval_segmentation/mmseg_ext.py)
val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# ---- schedule: SGD lr 0.01, momentum 0.9, wd 5e-4, poly (power 0.9) over 20k iterations ----
max_iters = 20000
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=2000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# ---- runtime ----
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2000, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
# lewel-bench: TensorBoard scalars under <work dir>/tb (lewel_bench/tblog.py; not part of the run's identity)
log = dict(tensorboard=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
