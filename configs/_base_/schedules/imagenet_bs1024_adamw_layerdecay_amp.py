# The optimiser of the released ADDP fine-tuning recipe (MAE/BEiT style):
# AdamW (0.9, 0.999), weight decay 0.05 except on 1-D parameters (norms,
# biases), the class token and the position embedding, layer-wise lr decay
# through ADDPViT.get_layer_depth (embeddings depth 0, block i depth i + 1,
# head and pooled norm the top depth), no gradient clipping, fp16 mixed
# precision with a dynamic loss scale (the release's torch.cuda.amp scaler).
# A config sets `lr` (base lr x batch / 256), `layer_decay_rate`, the schedule
# and `train_cfg`.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    dtype='float16',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LearningRateDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.75,
        flat_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0),
        }))

train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# the lr in a config is for 1024 images per step (8 GPUs x 128); other totals
# rescale it linearly, as the release's lr = base lr x batch / 256 does
auto_scale_lr = dict(enable=True, base_batch_size=1024)
