"""Linear probing and k-NN on frozen ADDP features: the linear-probe configs
train the head only, and the weighted k-NN matches scikit-learn's."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from PIL import Image

from mmaddp.evaluation.frozen_features import knn_accuracy, weighted_knn_scores
from mmaddp.registry import MODELS
from conftest import ROOT, build_runner, run

PROBE_DIR = osp.join(ROOT, 'configs', 'linear_probe')
DEMO_PROBE = osp.join(PROBE_DIR, 'addp-vit-nano-p4_1xb256-linear-600i_demo.py')
IMAGENET_PROBES = [
    osp.join(PROBE_DIR, 'addp-vit-base-p16_8xb2048-linear-coslr-90e_in1k-256px.py'),
    osp.join(PROBE_DIR, 'addp-vit-large-p16_8xb2048-linear-coslr-90e_in1k-256px.py'),
]
TINY_CLS = osp.join(ROOT, 'tests', 'configs', 'tiny_cls.py')


class _Snapshot(Hook):
    """Copies of the model's tensors when training starts (after init) and
    the losses of every iteration."""

    def __init__(self):
        self.before, self.losses = None, []

    def before_train(self, runner):
        self.before = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append(float(outputs['loss']))


def test_demo_linear_probe_trains_the_head_only(tmp_path, demo_root):
    cfg = Config.fromfile(DEMO_PROBE)
    cfg.model.backbone.init_cfg = None  # random weights: no demo checkpoint in the tests
    cfg.work_dir = str(tmp_path)
    cfg.train_cfg.max_iters = 4
    cfg.param_scheduler = []  # the probe's full lr from the first step
    data_root = osp.join(demo_root, 'imagenet') + '/'
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.update(batch_size=32, num_workers=0, persistent_workers=False)
        loader.dataset.data_root = data_root
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1000)
    runner = build_runner(cfg)
    snapshot = _Snapshot()
    runner.register_hook(snapshot)
    runner.train()

    after = runner.model.state_dict()
    backbone = [k for k in after if k.startswith('backbone.')]
    assert len(backbone) > 50  # every block, norm and embedding of the nano ViT
    changed = [k for k in backbone if not torch.equal(after[k], snapshot.before[k])]
    assert not changed, f'the frozen backbone changed: {changed[:5]}'
    for key in ('head.fc.weight', 'head.fc.bias'):
        assert not torch.equal(after[key], snapshot.before[key]), f'{key} did not train'
    # MAE's BatchNorm neck has no affine; its statistics follow the batches
    assert not any(k.startswith('neck.') and k.endswith(('weight', 'bias')) for k in after)
    assert not torch.equal(after['neck.bn.running_mean'], snapshot.before['neck.bn.running_mean'])
    assert len(snapshot.losses) == 4 and all(np.isfinite(snapshot.losses))
    # the frozen encoder stays in eval mode while the head trains (no dropout)
    model = runner.model
    model.train()
    leaves = [m for m in model.backbone.modules() if not list(m.children())]
    assert not any(m.training for m in leaves) and model.head.training


@pytest.mark.parametrize('config', IMAGENET_PROBES, ids=['vit-b', 'vit-l'])
def test_imagenet_linear_probe_configs(config, demo_root, tmp_path):
    """The paper-scale probes: the MAE recipe's numbers, and one real
    iteration through the runner (full-depth encoder at 64 px on the bundled
    images, 10 classes, no AMP on CPU) that moves the head and nothing else."""
    cfg = Config.fromfile(config)
    # the MAE recipe: LARS at 0.1 per 256 images, no weight decay, 90 epochs
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'LARS' and optimizer.weight_decay == 0.0
    batch = cfg.train_dataloader.batch_size * 8
    assert optimizer.lr == pytest.approx(0.1 * batch / 256)
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=batch)
    assert cfg.train_cfg.max_epochs == 90
    assert [t['type'] for t in cfg.train_dataloader.dataset.pipeline
            ][1:] == ['RandomResizedCrop', 'RandomFlip', 'PackInputs']
    width = {'vit-base': 768, 'vit-large': 1024}[osp.basename(config).split('-p16')[0][5:]]
    assert cfg.model.head.in_channels == cfg.model.neck.input_features == width

    cfg.work_dir = str(tmp_path)
    cfg.model.backbone.update(init_cfg=None, img_size=64)
    cfg.model.head.num_classes = cfg.data_preprocessor.num_classes = 10
    cfg.optim_wrapper.type = 'OptimWrapper'  # CUDA AMP has no CPU path
    cfg.param_scheduler = None  # the full lr from the first step
    cfg.default_hooks.checkpoint = None
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
    loader = cfg.train_dataloader
    loader.update(batch_size=4, num_workers=0, persistent_workers=False, pin_memory=False)
    loader.dataset.pop('split')
    loader.dataset.update(
        type='CustomDataset',
        data_root=osp.join(demo_root, 'imagenet'),
        data_prefix='train',
        indices=4)  # one epoch = one iteration
    loader.dataset.pipeline[1].scale = 64
    cfg.train_cfg.update(max_epochs=1, val_interval=10**6)
    runner = build_runner(cfg)
    snapshot = _Snapshot()
    runner.register_hook(snapshot)
    runner.train()
    model = runner.model
    trainable = sorted(name for name, p in model.named_parameters() if p.requires_grad)
    assert trainable == ['head.fc.bias', 'head.fc.weight']
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], snapshot.before[k])}
    assert {'head.fc.weight', 'head.fc.bias'} <= changed
    assert not {k for k in changed if k.startswith('backbone.')}
    assert len(snapshot.losses) == 1 and np.isfinite(snapshot.losses[0])
    model.train()
    assert not any(m.training for m in model.backbone.modules() if not list(m.children()))


def test_weighted_knn_matches_scikit_learn():
    from sklearn.neighbors import KNeighborsClassifier
    g = torch.Generator().manual_seed(0)
    train = torch.randn(300, 24, generator=g)
    labels = torch.randint(0, 7, (300, ), generator=g)
    query = torch.randn(64, 24, generator=g)
    for k, temperature in ((1, 0.07), (15, 0.1), (300, 0.5)):
        scores = weighted_knn_scores(train, labels, query, 7, k, temperature, chunk_size=10)
        reference = KNeighborsClassifier(
            n_neighbors=k,
            metric='cosine',
            algorithm='brute',
            weights=lambda d, t=temperature: np.exp((1 - d) / t)).fit(train.numpy(), labels.numpy())
        expected = reference.predict_proba(query.numpy())
        got = (scores / scores.sum(1, keepdim=True)).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    acc = knn_accuracy(
        train,
        labels,
        query,
        torch.tensor(reference.predict(query.numpy())),
        7,
        ks=(300, ),
        temperature=0.5)
    assert acc['k300/top1'] == 100.0 and acc['k300/top5'] == 100.0


@pytest.mark.parametrize('kwargs,message', [
    (dict(k=0), 'k must be in'),
    (dict(k=11), 'k must be in'),
    (dict(temperature=0.0), 'temperature must be > 0'),
    (dict(query=torch.zeros(3, 5)), 'queries 5'),
])
def test_weighted_knn_refuses_bad_input(kwargs, message):
    args = dict(query=torch.zeros(3, 4), k=2, temperature=0.07)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        weighted_knn_scores(
            torch.randn(10, 4),
            torch.zeros(10, dtype=torch.long),
            args['query'],
            2,
            k=args['k'],
            temperature=args['temperature'])


def _hand_features(root, split):
    """The tiny config's encoder (seed 0, random) over the image files, with
    the normalisation written out: pooled patch tokens + LayerNorm."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    encoder = MODELS.build(Config.fromfile(TINY_CLS).model.backbone)
    encoder.init_weights()
    encoder.eval()
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    x, y = [], []
    for label in (0, 1):
        folder = osp.join(root, split, f'class_{label}')
        for name in sorted(os.listdir(folder)):
            x.append(np.asarray(Image.open(osp.join(folder, name)).convert('RGB')))
            y.append(label)
    x = (torch.from_numpy(np.stack(x)).permute(0, 3, 1, 2).float() - mean) / std
    with torch.no_grad():
        return encoder(x)[-1].numpy(), np.array(y)


def test_knn_tool_against_an_independent_computation(tmp_path, tiny_cls_root):
    from sklearn.neighbors import KNeighborsClassifier
    out = tmp_path / 'knn.json'
    run([
        'tools/analysis_tools/knn_eval.py', TINY_CLS, '--random', '--k', '3', '7', '--temperature',
        '0.2', '--out',
        str(out), '--cfg-options', f'test_dataloader.dataset.data_root={tiny_cls_root}'
    ])
    result = json.loads(out.read_text())
    assert result['train_images'] == 16 and result['val_images'] == 8 and result['dims'] == 32
    x_train, y_train = _hand_features(tiny_cls_root, 'train')
    x_val, y_val = _hand_features(tiny_cls_root, 'val')
    for k in (3, 7):
        reference = KNeighborsClassifier(
            n_neighbors=k,
            metric='cosine',
            algorithm='brute',
            weights=lambda d: np.exp((1 - d) / 0.2)).fit(x_train, y_train)
        expected = 100.0 * float((reference.predict(x_val) == y_val).mean())
        assert result[f'k{k}/top1'] == pytest.approx(expected)
    assert 'k3/top5' not in result  # two classes: no top-5


def test_knn_tool_refuses_bad_input(tmp_path, tiny_cls_root):
    cases = (
        ([TINY_CLS], 'give a CHECKPOINT or --random'),
        ([TINY_CLS, str(tmp_path / 'none.pth')], 'checkpoint file not found'),
        ([
            TINY_CLS, '--random', '--k', '99', '--cfg-options',
            f'test_dataloader.dataset.data_root={tiny_cls_root}'
        ], 'k must be in [1, 16]'),
    )
    for args, message in cases:
        proc = subprocess.run([sys.executable, 'tools/analysis_tools/knn_eval.py', *args],
                              cwd=ROOT,
                              capture_output=True,
                              text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT))
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
        assert 'Traceback' not in proc.stderr
