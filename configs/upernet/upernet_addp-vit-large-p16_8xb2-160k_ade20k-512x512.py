# ADE20K semantic segmentation with UperNet on the ADDP ViT-L/16, 512x512 crops,
# 160k iterations. Target: mIoU 54.3 (published, ADDP ViT-L/16).
# As ViT-B (MAE/BEiT recipe: AdamW lr 1e-4, wd 0.05, layer decay 0.65, 1500
# warm-up iterations + poly, batch 16, fp16 AMP) with the features of blocks
# 8/12/16/24 (indices 7, 11, 15, 23), 1024-wide neck and heads and drop path 0.2.
_base_ = ['./upernet_addp-vit-base-p16_8xb2-160k_ade20k-512x512.py']

# the authors' released ADDP ViT-L/16 (or an mmaddp pretraining checkpoint)
pretrained = 'checkpoints/addp-vit-large-16.pth'

arch, width = 'l', 1024
out_indices = (7, 11, 15, 23)
drop_path = 0.2

model = dict(
    backbone=dict(
        arch=arch,
        out_indices=out_indices,
        drop_path_rate=drop_path,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(embed_dim=width),
    decode_head=dict(in_channels=[width] * 4, channels=width),
    auxiliary_head=dict(in_channels=width))
