# The segmentation protocol (fcn_r50-d8_voc12aug-512x512_20k.py: same model, optimiser, schedule shape,
# train + aug data, IoUMetric) scaled to the embedded mini benchmark so it runs on 2 CPU cores within
# 10 minutes: data/mini/VOCdevkit/VOC2012 (procedural shapes, 160-224 px images), every image size
# divided by 4 (scale (512, 128) instead of (2048, 512), 128 x 128 crops instead of 512 x 512), BN,
# batch 4, a short poly schedule, no intermediate validation (the CLI tests once at the end).
# Class names are the 10 shapes of lewel_bench.data.mini.SHAPE_CLASSES + background (not VOC's 20),
# so the datasets are mmseg's plain BaseSegDataset with explicit metainfo (PascalVOCDataset only
# accepts subsets of VOC's names).
_base_ = ['./fcn_r50-d8_voc12aug-512x512_20k.py']

lewel_dataset = 'mini'
total_batch_size = 4
max_iters = 120

norm_cfg = dict(type='BN', requires_grad=True)
crop_size = (128, 128)
num_classes = 11
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(num_classes=num_classes, norm_cfg=norm_cfg))

dataset_type = 'BaseSegDataset'
data_root = 'data/mini/VOCdevkit/VOC2012'
metainfo = dict(
    classes=('background', 'circle', 'square', 'triangle', 'star', 'cross', 'ring', 'hexagon',
             'ellipse', 'diamond', 'heart'),
    palette=[[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128],
             [0, 128, 128], [128, 128, 128], [64, 0, 0], [192, 0, 0], [64, 128, 0]])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(512, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='Pad', size=crop_size),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
_mini = dict(type=dataset_type, data_root=data_root, metainfo=metainfo, img_suffix='.jpg',
             seg_map_suffix='.png', reduce_zero_label=False)
dataset_train = dict(
    **_mini,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    ann_file='ImageSets/Segmentation/train.txt',
    pipeline=train_pipeline)
dataset_aug = dict(
    **_mini,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
    ann_file='ImageSets/Segmentation/aug.txt',
    pipeline=train_pipeline)
train_dataloader = dict(
    batch_size=total_batch_size,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(type='ConcatDataset', datasets=[dataset_train, dataset_aug], _delete_=True))
# no validation during training: the CLI evaluates the final model once with runner.test()
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = dict(
    num_workers=1,
    dataset=dict(
        **_mini,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline,
        _delete_=True))

optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=40, max_keep_ckpts=1))
env_cfg = dict(cudnn_benchmark=False)
log = dict(tensorboard=False)  # mini: no event files unless asked (log.tensorboard=True)
