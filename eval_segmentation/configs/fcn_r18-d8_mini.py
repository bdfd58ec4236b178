# The mini segmentation config (fcn_r50-d8_mini.py) with a ResNet-18 backbone, for the backbones the mini
# pretraining configs train (pretrain/configs/<method>_mini.yaml). Head widths as mmseg's own
# configs/fcn/fcn_r18-d8_*.py: the decode head reads res5 (512 channels), the auxiliary head res4 (256).
_base_ = ['./fcn_r50-d8_mini.py']

model = dict(
    backbone=dict(depth=18),
    decode_head=dict(in_channels=512, channels=128),
    auxiliary_head=dict(in_channels=256, channels=64))

# ResNet-18 is about 4x cheaper per iteration than ResNet-50 here: spend it on a longer schedule.
max_iters = 400
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100, max_keep_ckpts=1))
