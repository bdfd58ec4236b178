# The mini segmentation config (fcn_r50-d8_mini.py) with a ResNet-18 backbone, for the backbones the mini
# pretraining configs train (pretrain/configs/<method>_mini.yaml). Head widths as mmseg's own
# configs/fcn/fcn_r18-d8_*.py: the decode head reads res5 (512 channels), the auxiliary head res4 (256).
_base_ = ['./fcn_r50-d8_mini.py']

model = dict(
    backbone=dict(depth=18),
    decode_head=dict(in_channels=512, channels=128),
    auxiliary_head=dict(in_channels=256, channels=64))

# ResNet-18 costs ~0.23 s per iteration here (2 cores, quiet): spend it on a longer schedule and a higher
# lr. Measured from a 10-epoch LEWEL_M mini backbone: 400 iterations at lr 0.01 -> mIoU 10.0 (background
# and one class), at lr 0.05 -> 10.8; 1600 iterations at lr 0.05 -> 24.7 (6.3 min incl. the test).
max_iters = 1600
optimizer = dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=0.0005)
optim_wrapper = dict(optimizer=optimizer)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=400, max_keep_ckpts=1))
