# tiny_cls.py with randomness in every part a resume must restore: shuffled
# data, random flips in 2 loader workers, dropout and drop-path; 8 iterations,
# a checkpoint every 2 (the kill tests of tests/test_reliability.py).
_base_ = ['./tiny_cls.py']
model = dict(backbone=dict(drop_rate=0.1, drop_path_rate=0.1))
pipeline = [
    dict(type='CheckedLoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs')
]
train_dataloader = dict(num_workers=2, dataset=dict(pipeline=pipeline), sampler=dict(shuffle=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=2, end=8),
]
train_cfg = dict(max_iters=8)
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', interval=2, by_epoch=False, max_keep_ckpts=2))
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='IterationSeedHook')]
