# Fine-tuning the nano ADDP ViT with 100 labelled images per class (1,000
# images, 64 passes): the all-label recipe with its regularisation back,
# drop path and batched rotation, shear and resized crop (one resample per
# batch). The image list is given by train_dataloader.dataset.ann_file
# (tools/run_demo.py writes the first 100 images of each class).
_base_ = ['./addp-vit-nano-p4_1xb64-6000i_demo.py']

model = dict(backbone=dict(drop_path_rate=0.1))
data_preprocessor = dict(
    batch_augments=dict(
        augments=dict(
            type='BatchRandomAffine',
            rotate=(-12., 12.),
            shear=(-0.15, 0.15),
            crop_area=(0.7, 1.0),
            crop_aspect=(0.85, 1.18))))
max_iters = 1000
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=33),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=33, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
