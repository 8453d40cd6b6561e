# Linear probing of the frozen ADDP ViT-L/16 on ImageNet-1k at 256 px: the
# ViT-B recipe with the large encoder.
_base_ = ['./addp-vit-base-p16_8xb2048-linear-coslr-90e_in1k-256px.py']

# the authors' released ADDP ViT-L/16 (or an mmaddp pretraining checkpoint)
pretrained = 'checkpoints/addp-vit-large-16.pth'
width, depth = 1024, 24

model = dict(
    backbone=dict(
        arch='l', frozen_stages=depth, init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(input_features=width),
    head=dict(in_channels=width))
