# ADDP pretraining, ViT-L/16, ImageNet-1k, 800 epochs: the released recipe
# (as ViT-B, with MAGE ViT-L as the token predictor).
# Targets: fine-tuned top-1 85.9, COCO AP box 54.6, ADE20K mIoU 54.3, FID 7.6.
_base_ = ['./addp_vit-base-p16_64xb64-amp-1600e_in1k.py']

token_predictor_checkpoint = 'pretrain/mage-vitl-1600.pth'
max_epochs, warmup_epochs = 800, 40
model = dict(
    backbone=dict(arch='l'),
    neck=dict(in_channels=1024, embed_dims=1024),
    token_predictor=dict(arch='l', checkpoint=token_predictor_checkpoint))
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
        eta_min=0.0,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
