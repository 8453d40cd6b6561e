# ADDP pretraining of the nano ViT (4 px patches: the tokenizer's
# downsampling) on the bundled 32 px digits, 64 tokens of 512 codes each.
_base_ = ['../_base_/datasets/demo_pretrain.py', '../_base_/demo_runtime.py']

tokenizer_checkpoint = 'work_dirs/vq-tokenizer-tiny-f4_1xb64-1000i_demo/iter_1000.pth'
token_predictor_checkpoint = 'work_dirs/token-predictor-tiny_1xb64-2400i_demo/iter_2400.pth'
num_codes, width = 512, 64
model = dict(
    type='ADDP',
    backbone=dict(
        type='ADDPViT',
        arch='nano',
        img_size=32,
        patch_size=4,
        out_type='raw',
        pre_norm=True,
        drop_rate=0.0,
        attn_drop_rate=0.0),  # no dropout (docs/demo_schedules.md)
    neck=dict(
        type='TokenDecoder',
        in_channels=width,
        embed_dims=width,
        depth=2,
        num_heads=4,
        num_tokens=64,
        vocab_size=num_codes + 2,
        drop_rate=0.0,
        # not the release's init at this width (docs/demo_schedules.md)
        init_cfg=[
            dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
            dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
            dict(type='Normal', layer='Embedding', std=0.24)
        ]),
    # the targets are the teacher's distributions already: no label smoothing
    # on top (the release's 0.1; docs/demo_schedules.md)
    head=dict(type='DenoisingHead', label_smoothing=0.0),
    tokenizer=dict(
        type='VQTokenizer',
        base_channels=32,
        channel_mults=(1, 2, 4),
        num_res_blocks=1,
        code_dim=32,
        num_codes=num_codes,
        norm_groups=8,
        checkpoint=tokenizer_checkpoint),
    token_predictor=dict(
        type='TokenPredictor',
        arch=dict(
            embed_dims=128,
            depth=4,
            num_heads=4,
            decoder_embed_dims=128,
            decoder_depth=2,
            decoder_num_heads=4),
        codebook_size=num_codes,
        num_classes=1,
        class_id=num_codes,
        num_tokens=64,
        encoder_drop=0.5,  # as the predictor was trained (its config)
        checkpoint=token_predictor_checkpoint),
    # where the CPU has bf16: predictor and tokenizer decoder in bf16, the
    # tokenizer encoder fp32 so code ids stay exact (benchmarks/results/demo_step.md)
    frozen_precision='auto',
    codebook_token_table=True)  # decoder's code rows from the codebook (docs/demo_schedules.md)

train_dataloader = dict(batch_size=64, num_workers=2)
optim_wrapper = dict(
    type='CPUBf16OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05, fused=True),
    clip_grad=dict(max_norm=3.0),
    paramwise_cfg=dict(flat_decay_mult=0.0))
max_iters = 1000
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=150),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=150, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
val_dataloader = test_dataloader = None  # no metric during pretraining
default_hooks = dict(checkpoint=dict(interval=500))
