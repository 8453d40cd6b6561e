# Mask R-CNN on an ADDP ViT-L/16 with the ViTDet recipe (see the ViT-B config):
# 24 blocks with global attention in 5, 11, 17, 23, drop path 0.4, layer-wise
# lr decay 0.8; same data, schedule (184,375 iterations x 64 images) and AMP.
# Published target (ADDP paper, COCO val2017): ViT-L AP box 54.6.
_base_ = ['./mask-rcnn_addp-vit-base-p16_simple-fpn_lsj-1024_100e_coco.py']

pretrained = 'checkpoints/addp-vit-large-16.pth'

model = dict(
    backbone=dict(
        arch='l',
        global_attn_indexes=(5, 11, 17, 23),
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=1024))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8))
