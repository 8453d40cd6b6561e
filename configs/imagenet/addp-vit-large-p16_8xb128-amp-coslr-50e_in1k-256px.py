# ImageNet-1k fine-tuning of the ADDP ViT-L/16 at 256 px: the released recipe.
# Target: top-1 85.9 (published, ADDP ViT-L/16, 50 epochs).
# As ViT-B (batch 1024, AdamW, wd 0.05, mixup/cutmix, RandAugment, random
# erasing, label smoothing, fp16 AMP, no EMA) with base lr 2.5e-4 per 256
# images (lr 1e-3 at 1024), layer decay 0.8, drop path 0.2, 5 warm-up epochs.
_base_ = ['./addp-vit-base-p16_8xb128-amp-coslr-100e_in1k-256px.py']

# the authors' released ADDP ViT-L/16 (or an mmaddp pretraining checkpoint)
pretrained = 'checkpoints/addp-vit-large-16.pth'

arch, width = 'l', 1024
batch_size, num_gpus = 128, 8
base_lr = 2.5e-4  # per 256 images
lr = base_lr * batch_size * num_gpus / 256
min_lr = 1e-6
layer_decay = 0.8
drop_path = 0.2
max_epochs, warmup_epochs = 50, 5

model = dict(
    backbone=dict(
        arch=arch,
        drop_path_rate=drop_path,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    head=dict(in_channels=width))

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
