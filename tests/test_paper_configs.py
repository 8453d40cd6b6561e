"""The paper-scale configs (ImageNet fine-tuning, ADE20K UperNet, COCO Mask R-CNN).

Every config under ``configs/imagenet``, ``configs/upernet`` and
``configs/mask_rcnn`` whose name has no ``_demo`` (the tiny demo configs have
their own tests) is a paper config and goes through two checks:

1. its recipe numbers equal ../shared/ADDP_SPEC.md (and, for ADE20K, where the
   spec only names "the MAE/BEiT recipe", that recipe's numbers), its
   checkpoint variable feeds the backbone and its header comment names the
   published result it targets;
2. one real training iteration on CPU through ``mmengine.runner.Runner``,
   with the config's own model, pipeline, optimiser constructor and losses.

What the training check changes, and nothing else:

* ``model.backbone.init_cfg = None`` (no released checkpoint here);
* the backbone keeps its width and heads (so every neck/head channel in the
  config is exercised as written) but has ``DEPTH`` (6) blocks instead of 12/24;
  ``out_indices`` and any other backbone list of block indices
  (``*indices`` / ``*indexes``) are mapped proportionally onto those blocks.
  The full-depth backbone is still built and run once (forward only);
* inputs are small: ImageNet crops 64 px, ADE20K crops 64x64, COCO 128 px
  (every 1024 px size in the pipeline and the batch padding), and the
  backbone's ``img_size`` matches;
* Mask R-CNN samples 64 RoIs per image for its box/mask heads (not 512);
* data: the bundled demo data (``demo_root``), i.e. ``CustomDataset`` on
  ``imagenet/`` (10 classes), ``DigitsSegDataset`` on ``ade/`` (11 classes,
  label 0 is a class, so ``LoadAnnotations`` keeps label 0), ``CocoDataset``
  on ``coco/`` (10 classes); heads get those class counts; batch 4 / 2 / 2, no workers;
* ``AmpOptimWrapper`` -> ``OptimWrapper`` (no CUDA AMP on CPU);
* no lr schedule (warm-up starts at 1e-4 / 1e-6 of the lr, too small to move
  fp32 weights in one step: the schedules are checked on their own in step 1);
* one iteration, no validation, no checkpoint saving.
"""
import copy
import functools
import glob
import math
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import PARAM_SCHEDULERS, DefaultScope

from conftest import build_runner

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TASK_DIRS = ('imagenet', 'upernet', 'mask_rcnn')
DEPTH = 6  # blocks of the reduced backbone in the training check (keeps some
# windowed blocks between the mapped global / output blocks of ViTDet configs)
SIZES = dict(imagenet=64, upernet=64, mask_rcnn=128)  # input px in the training check


def _discover():
    found = []
    for task in TASK_DIRS:
        for path in sorted(glob.glob(osp.join(ROOT, 'configs', task, '*.py'))):
            if '_demo' not in osp.basename(path):
                found.append(osp.relpath(path, osp.join(ROOT, 'configs')))
    return found


PAPER_CONFIGS = _discover()


def _task(rel):
    return rel.split(osp.sep)[0]


def _of(task):
    return [rel for rel in PAPER_CONFIGS if _task(rel) == task]


@functools.lru_cache(maxsize=None)
def _parsed(rel):
    return Config.fromfile(osp.join(ROOT, 'configs', rel))


def _load(rel):
    """A fresh copy of the parsed config (parsing takes a second or two)."""
    return copy.deepcopy(_parsed(rel))


def _size(cfg):
    """'b' or 'l' from the backbone's arch."""
    arch = cfg.model.backbone.arch
    assert isinstance(arch, str), f'a paper config names its arch, got {arch!r}'
    return {'b': 'b', 'base': 'b', 'l': 'l', 'large': 'l'}[arch.lower()]


def _gpus_x_batch(rel):
    match = re.search(r'_(\d+)xb(\d+)', osp.basename(rel))
    assert match, f'{rel}: the name should say GPUs x batch per GPU (e.g. 8xb128)'
    return int(match.group(1)), int(match.group(2))


def _find(transforms, type_name):
    hits = [t for t in transforms if t['type'] == type_name]
    assert len(hits) == 1, f'expected one {type_name} in {[t["type"] for t in transforms]}'
    return hits[0]


def _simulate_lr(param_scheduler, lr, iters, epoch_length=1, at=()):
    """lr at the given iterations of the config's schedulers on one parameter."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    schedulers = [
        PARAM_SCHEDULERS.build(
            copy.deepcopy(dict(s)),
            default_args=dict(optimizer=optimizer, epoch_length=epoch_length))
        for s in param_scheduler
    ]
    seen = {}
    for it in range(iters):
        if it in at:
            seen[it] = optimizer.param_groups[0]['lr']
        optimizer.step()
        for s in schedulers:
            s.step()
    seen[iters] = optimizer.param_groups[0]['lr']
    return seen


# ----------------------------------------------------------------- discovery
def test_paper_configs_are_discovered():
    names = {osp.basename(rel) for rel in PAPER_CONFIGS}
    assert 'addp-vit-base-p16_8xb128-amp-coslr-100e_in1k-256px.py' in names
    assert 'addp-vit-large-p16_8xb128-amp-coslr-50e_in1k-256px.py' in names
    assert 'upernet_addp-vit-base-p16_8xb2-160k_ade20k-512x512.py' in names
    assert 'upernet_addp-vit-large-p16_8xb2-160k_ade20k-512x512.py' in names
    # one ViT-B and one ViT-L config per task that has any
    for task in TASK_DIRS:
        sizes = sorted(_size(_load(rel)) for rel in _of(task))
        assert sizes in ([], ['b', 'l']), f'{task}: found sizes {sizes}'
    # nothing in those folders is passed over except the demo configs
    for task in TASK_DIRS:
        for path in glob.glob(osp.join(ROOT, 'configs', task, '*.py')):
            rel = osp.relpath(path, osp.join(ROOT, 'configs'))
            assert rel in PAPER_CONFIGS or '_demo' in osp.basename(path)


# ------------------------------------------------------- spec: every config
PUBLISHED = {  # ../shared/ADDP_SPEC.md
    ('imagenet', 'b'): '83.9', ('imagenet', 'l'): '85.9',
    ('upernet', 'b'): '48.1', ('upernet', 'l'): '54.3',
    ('mask_rcnn', 'b'): '51.7', ('mask_rcnn', 'l'): '54.6',
}
CHECKPOINTS = {'b': 'addp-vit-base-16.pth', 'l': 'addp-vit-large-16.pth'}


@pytest.mark.parametrize('rel', PAPER_CONFIGS)
def test_checkpoint_variable_and_published_target(rel):
    cfg = _load(rel)
    size = _size(cfg)
    assert osp.basename(cfg.pretrained) == CHECKPOINTS[size]
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint=cfg.pretrained)
    with open(osp.join(ROOT, 'configs', rel)) as f:
        text = f.read()
    header = ''.join(line for line in text.splitlines(keepends=True) if line.startswith('#'))
    assert PUBLISHED[(_task(rel), size)] in header, 'the header names the published result'
    # one top-level variable, so that a single --cfg-options / edit moves it
    assert re.search(r"^pretrained = '[^']+'", text, re.M)


# ---------------------------------------------------- spec: ImageNet recipe
IMAGENET = {  # "Released fine-tuning recipe (ImageNet, 256x256)"
    'b': dict(base_lr=1e-3, layer_decay=0.65, drop_path=0.1, epochs=100, warmup=20),
    'l': dict(base_lr=2.5e-4, layer_decay=0.8, drop_path=0.2, epochs=50, warmup=5),
}
IMAGENET_BATCH = 1024
MIN_LR = 1e-6  # the release's cosine floor (main_finetune.py default)


@pytest.mark.parametrize('rel', _of('imagenet'))
def test_imagenet_recipe(rel):
    cfg = _load(rel)
    spec = IMAGENET[_size(cfg)]
    gpus, per_gpu = _gpus_x_batch(rel)
    assert cfg.train_dataloader.batch_size == per_gpu
    assert gpus * per_gpu == IMAGENET_BATCH
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=IMAGENET_BATCH)

    backbone = cfg.model.backbone
    assert backbone.type == 'ADDPViT' and backbone.patch_size == 16
    assert backbone.img_size == 256
    assert backbone.out_type == 'avg_featmap'  # patch-token mean + LayerNorm
    assert backbone.pre_norm is False  # the release's fine-tuning ViT
    assert backbone.drop_path_rate == spec['drop_path']
    head = cfg.model.head
    assert head.type == 'LinearClsHead' and head.num_classes == 1000
    assert head.in_channels == {'b': 768, 'l': 1024}[_size(cfg)]
    assert head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    augments = {a['type']: a['alpha'] for a in cfg.model.train_cfg.augments}
    assert augments == {'Mixup': 0.8, 'CutMix': 1.0}

    pipeline = cfg.train_dataloader.dataset.pipeline
    crop = _find(pipeline, 'RandomResizedCrop')
    assert crop.scale == 256 and crop.interpolation == 'bicubic'
    rand_aug = _find(pipeline, 'RandAugment')  # rand-m9-mstd0.5-inc1
    assert (rand_aug.policies, rand_aug.num_policies, rand_aug.magnitude_level,
            rand_aug.magnitude_std, rand_aug.total_level) == ('timm_increasing', 2, 9, 0.5, 10)
    assert _find(pipeline, 'RandomErasing').erase_prob == 0.25
    test_pipeline = cfg.val_dataloader.dataset.pipeline
    assert _find(test_pipeline, 'CenterCrop').crop_size == 256
    assert _find(test_pipeline, 'ResizeEdge').interpolation == 'bicubic'

    wrapper = cfg.optim_wrapper
    assert wrapper.type == 'AmpOptimWrapper'
    assert wrapper.constructor == 'LearningRateDecayOptimWrapperConstructor'
    assert wrapper.paramwise_cfg.layer_decay_rate == spec['layer_decay']
    assert wrapper.paramwise_cfg.flat_decay_mult == 0.0
    opt = wrapper.optimizer
    assert opt.type == 'AdamW' and tuple(opt.betas) == (0.9, 0.999)
    assert opt.weight_decay == 0.05
    assert math.isclose(opt.lr, spec['base_lr'] * IMAGENET_BATCH / 256)
    assert 'ema' not in str(cfg.get('custom_hooks', [])).lower()  # the release has no EMA

    assert cfg.train_cfg.max_epochs == spec['epochs']
    epoch_len = 10  # iterations per epoch in the simulation
    warm = spec['warmup'] * epoch_len
    lrs = _simulate_lr(
        cfg.param_scheduler,
        opt.lr,
        spec['epochs'] * epoch_len,
        epoch_length=epoch_len,
        at=(0, warm // 2, warm))
    assert lrs[0] < opt.lr * 1e-3
    assert math.isclose(lrs[warm // 2], opt.lr / 2, rel_tol=0.05)  # linear warm-up
    assert math.isclose(lrs[warm], opt.lr, rel_tol=1e-6)  # peak after the warm-up epochs
    assert math.isclose(lrs[spec['epochs'] * epoch_len], MIN_LR, rel_tol=0.05)  # cosine floor


# ------------------------------------------------------ spec: ADE20K recipe
ADE_INDICES = {'b': (3, 5, 7, 11), 'l': (7, 11, 15, 23)}  # blocks 4/6/8/12 style
ADE_DROP_PATH = {'b': 0.1, 'l': 0.2}
# the spec's numbers: UperNet, 512x512, 160k iterations, layer decay 0.65,
# strides 4/8/16/32; the rest is the MAE/BEiT recipe the spec refers to
ADE = dict(
    crop=(512, 512),
    iters=160000,
    layer_decay=0.65,
    lr=1e-4,
    weight_decay=0.05,
    warmup=1500,
    batch=16)


@pytest.mark.parametrize('rel', _of('upernet'))
def test_ade20k_recipe(rel):
    cfg = _load(rel)
    size = _size(cfg)
    width = {'b': 768, 'l': 1024}[size]
    gpus, per_gpu = _gpus_x_batch(rel)
    assert cfg.train_dataloader.batch_size == per_gpu and gpus * per_gpu == ADE['batch']

    model = cfg.model
    assert model.type == 'EncoderDecoder'
    backbone = model.backbone
    assert backbone.type == 'ADDPViT' and backbone.out_type == 'featmap'
    assert tuple(backbone.img_size) == ADE['crop']
    assert tuple(backbone.out_indices) == ADE_INDICES[size]
    assert backbone.drop_path_rate == ADE_DROP_PATH[size]
    # 1/16 features rescaled to strides 4/8/16/32 by MAE/BEiT's deconvolution pyramid
    assert model.neck.type == 'Feature2Pyramid' and list(model.neck.rescales) == [4, 2, 1, 0.5]
    assert model.neck.embed_dim == width
    assert model.decode_head.type == 'UPerHead' and model.decode_head.num_classes == 150
    assert list(model.decode_head.in_channels) == [width] * 4
    assert model.auxiliary_head.type == 'FCNHead' and model.auxiliary_head.num_classes == 150
    assert model.data_preprocessor.size == ADE['crop']
    crop = _find(cfg.train_dataloader.dataset.pipeline, 'RandomCrop')
    assert tuple(crop.crop_size) == ADE['crop']
    assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'

    wrapper = cfg.optim_wrapper
    assert wrapper.type == 'AmpOptimWrapper'
    assert wrapper.constructor == 'BackboneLayerDecayOptimWrapperConstructor'
    assert wrapper.paramwise_cfg.layer_decay_rate == ADE['layer_decay']
    assert wrapper.optimizer.type == 'AdamW'
    assert wrapper.optimizer.lr == ADE['lr']
    assert wrapper.optimizer.weight_decay == ADE['weight_decay']

    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    assert cfg.train_cfg.max_iters == ADE['iters']
    lrs = _simulate_lr(
        cfg.param_scheduler,
        ADE['lr'],
        ADE['iters'],
        at=(0, ADE['warmup'], (ADE['iters'] + ADE['warmup']) // 2))
    assert lrs[0] < ADE['lr'] * 1e-3
    assert math.isclose(lrs[ADE['warmup']], ADE['lr'], rel_tol=1e-6)
    assert math.isclose(lrs[(ADE['iters'] + ADE['warmup']) // 2], ADE['lr'] / 2, rel_tol=1e-3)
    assert lrs[ADE['iters']] < ADE['lr'] * 1e-3  # poly (power 1) down to 0


# -------------------------------------------------------- spec: COCO recipe
@pytest.mark.parametrize('rel', _of('mask_rcnn'))
def test_coco_recipe(rel):
    """The spec names the ViTDet recipe: Mask R-CNN, large-scale jitter at 1024."""
    cfg = _load(rel)
    assert cfg.model.type == 'MaskRCNN'
    assert cfg.model.backbone.type == 'ADDPViT'
    assert '(1024, 1024)' in str(cfg.train_dataloader.dataset), 'LSJ crops 1024x1024'


# ------------------------------------------------- one training iteration
class _Probe(Hook):
    """Records the loss of the iteration and the weights around it."""

    def _params(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.before = self._params(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.after = self._params(runner)
        self.outputs = outputs
        self.groups = [(g.get('param_name'), g['lr'])
                       for g in runner.optim_wrapper.optimizer.param_groups]


def _remap(indices, depth):
    """Block indices of a ``depth``-block net mapped onto ``DEPTH`` blocks."""
    out = [max(0, round(((i + depth if i < 0 else i) + 1) * DEPTH / depth) - 1) for i in indices]
    return type(indices)(out)


def _shrink_backbone(backbone, img_size):
    from mmaddp.models.backbones.addp_vit import ADDPViT
    arch = dict(ADDPViT.arch_zoo[backbone.arch.lower()])
    depth = arch['num_layers']
    for key in list(backbone):
        value = backbone[key]
        if (key == 'out_indices' or key.endswith(('indices', 'indexes'))) \
                and isinstance(value, (list, tuple)) \
                and all(isinstance(v, int) for v in value):
            backbone[key] = _remap(value, depth)
    backbone.arch = dict(arch, num_layers=DEPTH)
    backbone.img_size = img_size
    backbone.init_cfg = None


def _set_sizes(obj, size):
    """Every 1024-scale size in a (nested) pipeline / preprocessor -> ``size``."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ('scale', 'crop_size', 'size', 'img_scale') and \
                    isinstance(value, (list, tuple)) and len(value) == 2 and \
                    all(isinstance(v, int) and v >= 512 for v in value):
                obj[key] = (size, size)
            else:
                _set_sizes(value, size)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _set_sizes(item, size)


def _set_num_classes(obj, num_classes):
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == 'num_classes' and isinstance(value, int):
                obj[key] = num_classes
            else:
                _set_num_classes(value, num_classes)
    elif isinstance(obj, list):
        for item in obj:
            _set_num_classes(item, num_classes)


def _innermost_dataset(dataset):
    while 'dataset' in dataset:  # wrappers such as RepeatDataset
        dataset = dataset.dataset
    return dataset


def _for_one_cpu_iteration(cfg, task, demo_root, work_dir):
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    cfg.launcher = 'none'
    cfg.optim_wrapper.type = 'OptimWrapper'
    for key in ('dtype', 'loss_scale'):
        cfg.optim_wrapper.pop(key, None)
    cfg.param_scheduler = None
    cfg.default_hooks.checkpoint = None
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
    loader = cfg.train_dataloader
    loader.update(num_workers=0, persistent_workers=False, pin_memory=False)
    dataset = _innermost_dataset(loader.dataset)

    size = SIZES[task]
    if task == 'imagenet':
        batch = 4
        _shrink_backbone(cfg.model.backbone, size)
        dataset.pop('split', None)
        dataset.update(
            type='CustomDataset',
            data_root=osp.join(demo_root, 'imagenet'),
            data_prefix='train',
            indices=batch)  # one epoch = one iteration
        _find(dataset.pipeline, 'RandomResizedCrop').scale = size
        cfg.model.head.num_classes = 10
        cfg.data_preprocessor.num_classes = 10  # the Runner hands it to the model
        cfg.train_cfg.max_epochs = 1
    elif task == 'upernet':
        batch = 2
        _shrink_backbone(cfg.model.backbone, (size, size))
        dataset.update(type='DigitsSegDataset', data_root=osp.join(demo_root, 'ade'))
        _find(dataset.pipeline, 'LoadAnnotations').reduce_zero_label = False
        _find(dataset.pipeline, 'RandomResize').scale = (4 * size, size)
        _find(dataset.pipeline, 'RandomCrop').crop_size = (size, size)
        cfg.model.data_preprocessor.size = (size, size)
        _set_num_classes(cfg.model, 11)
        cfg.train_cfg.max_iters = 1
    else:
        batch = 2
        from mmaddp.datasets import DIGIT_CLASSES
        _shrink_backbone(cfg.model.backbone, size)
        dataset.update(
            data_root=osp.join(demo_root, 'coco') + '/',
            ann_file='annotations/instances_train2017.json',
            data_prefix=dict(img='train2017/'),
            metainfo=dict(classes=DIGIT_CLASSES))
        _set_sizes(loader, size)
        _set_sizes(cfg.model.data_preprocessor, size)
        _set_num_classes(cfg.model, len(DIGIT_CLASSES))
        rcnn = cfg.model.get('train_cfg', {}).get('rcnn', {})
        if 'sampler' in rcnn:
            rcnn.sampler.num = 64  # RoIs per image for the box/mask heads (512 in ViTDet)
        if 'max_iters' in cfg.train_cfg:
            cfg.train_cfg.max_iters = 1
        else:
            dataset.indices = batch
            cfg.train_cfg.max_epochs = 1
    loader.batch_size = batch
    if 'val_interval' in cfg.train_cfg:
        cfg.train_cfg.val_interval = 10**6
    return batch


@pytest.mark.parametrize('rel', PAPER_CONFIGS)
def test_one_training_iteration(rel, demo_root, tmp_path):
    cfg = _load(rel)
    task = _task(rel)
    layer_decay = cfg.optim_wrapper.get('paramwise_cfg', {}).get('layer_decay_rate')
    lr = cfg.optim_wrapper.optimizer.lr
    auto_scale = cfg.get('auto_scale_lr') or {}

    # the full-depth backbone builds and runs as configured (forward only)
    full = copy.deepcopy(cfg.model.backbone)
    full.init_cfg = None
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        from mmengine.registry import MODELS
        net = MODELS.build(full)
    net.eval()
    with torch.no_grad():
        outs = net(torch.rand(1, 3, 64, 64))
    out_indices = full.get('out_indices', -1)
    assert len(outs) == (len(out_indices) if isinstance(out_indices, (list, tuple)) else 1)
    assert all(o.shape[1] == net.embed_dims for o in outs)
    del net, outs

    batch = _for_one_cpu_iteration(cfg, task, demo_root, tmp_path)
    runner = build_runner(cfg)
    probe = _Probe()
    runner.register_hook(probe, priority='LOWEST')
    runner.train()

    assert runner.iter == 1
    losses = {k: v for k, v in probe.outputs.items() if 'loss' in k}
    assert 'loss' in losses, losses
    if task != 'imagenet':  # decode + auxiliary head / RPN + box + mask heads
        assert len(losses) > 2, losses
    for name, value in losses.items():
        assert torch.isfinite(torch.as_tensor(value)).all(), (name, value)

    # every trainable tensor of the first block and of the head moved
    moved = {n for n in probe.before if not torch.equal(probe.before[n], probe.after[n])}
    first = [n for n in probe.before if n.startswith('backbone.blocks.0.')]
    rest = [n for n in probe.before if not n.startswith('backbone.')]
    assert first and rest
    assert 'backbone.patch_embed.proj.weight' in moved
    assert set(first) <= moved, sorted(set(first) - moved)
    assert len(moved & set(rest)) >= 0.9 * len(rest), sorted(set(rest) - moved)

    # the optimiser is the configured one: auto-scaled lr, layer-wise decay
    if auto_scale.get('enable'):
        lr = lr * batch / auto_scale['base_batch_size']
    by_name = dict(probe.groups)
    if layer_decay is not None:
        # embeddings sit DEPTH + 1 levels below the top (blocks, then head)
        assert math.isclose(
            by_name['backbone.patch_embed.proj.weight'],
            lr * layer_decay**(DEPTH + 1),
            rel_tol=1e-6)
        assert math.isclose(
            by_name[f'backbone.blocks.{DEPTH - 1}.attn.qkv.weight'], lr * layer_decay, rel_tol=1e-6)
        head_lrs = {v for n, v in by_name.items() if not n.startswith('backbone.')}
        assert all(math.isclose(v, lr, rel_tol=1e-6) for v in head_lrs)
    else:
        assert all(math.isclose(g['lr'], lr) for g in runner.optim_wrapper.optimizer.param_groups)
