# ImageNet-1k fine-tuning of the ADDP ViT-B/16 at 256 px: the released recipe.
# Target: top-1 83.9 (published, ADDP ViT-B/16, 100 epochs).
# Batch 1024 (8 GPUs x 128), AdamW (0.9, 0.999), wd 0.05, base lr 1e-3 per 256
# images (lr 4e-3 at 1024), layer decay 0.65, drop path 0.1, 20 warm-up epochs
# then cosine to 1e-6 (scaled per layer, as in the release), mixup 0.8,
# cutmix 1.0, label smoothing 0.1, RandAugment rand-m9-mstd0.5-inc1, random
# erasing 0.25, no EMA (the release trains without one), fp16 AMP.
# Head: mean of the patch tokens + LayerNorm + linear (ADDPViT 'avg_featmap'),
# no final norm, and no LayerNorm before the first block (pre_norm=False, the
# release's fine-tuning ViT; the checkpoint's tokenizer_norm is dropped).
_base_ = [
    '../_base_/datasets/imagenet_bs128_addp_256.py',
    '../_base_/schedules/imagenet_bs1024_adamw_layerdecay_amp.py',
    'mmpretrain::_base_/default_runtime.py',
]
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmaddp'], allow_failed_imports=False)

# the authors' released ADDP ViT-B/16 (or an mmaddp pretraining checkpoint)
pretrained = 'checkpoints/addp-vit-base-16.pth'

arch, width = 'b', 768
batch_size, num_gpus = 128, 8
base_lr = 1e-3  # per 256 images
lr = base_lr * batch_size * num_gpus / 256
min_lr = 1e-6
layer_decay = 0.65
drop_path = 0.1
max_epochs, warmup_epochs = 100, 20

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ADDPViT',
        arch=arch,
        img_size=256,
        patch_size=16,
        out_type='avg_featmap',
        pre_norm=False,
        final_norm=False,
        drop_path_rate=drop_path,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=width,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=2e-5)]),
    # one of the two per batch, with equal probability (timm's switch prob 0.5)
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8),
                             dict(type='CutMix', alpha=1.0)]))

train_dataloader = dict(batch_size=batch_size)
val_dataloader = dict(batch_size=batch_size)
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=lr), paramwise_cfg=dict(layer_decay_rate=layer_decay))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - warmup_epochs,
        eta_min_ratio=min_lr / lr,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=2, save_best='auto'))
randomness = dict(seed=0, diff_rank_seed=True)
# stop at a NaN / inf loss before it is saved; random draws fixed per iteration (exact resume)
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='IterationSeedHook')]
