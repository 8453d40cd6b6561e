"""Generation tools: per-sample seeds, the feature nets and their errors,
tools/generate.py (one vs two torchrun processes, no dataset),
tools/eval_fid.py, and GenerationEvalHook inside a short training
(tests/test_fid_protocol.py checks the FID / IS numbers against scipy)."""
import importlib.util
import json
import math
import os
import os.path as osp
import socket
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from mmaddp.evaluation.generation_metrics import (ClassifierFeatureNet, InceptionFeatureNet,
                                                  build_feature_net, list_image_files)
from mmaddp.utils.generation import sample_seed, shard_indices
from conftest import ROOT

CLS_CFG = osp.join(ROOT, 'tests', 'configs', 'tiny_cls.py')
DEMO_ADDP_CFG = osp.join(ROOT, 'configs', 'addp', 'addp_vit-nano-p4_1xb64-1000i_demo.py')
INCEPTION_FILE = 'weights-inception-2015-12-05-6726825d.pth'


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f'tool_{name}',
                                                  osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _subprocess(args, **env):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', PYTHON=sys.executable, **env)
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _read(path):
    return np.array(Image.open(path).convert('RGB'))


# ------------------------------------------------------------------ seeds
def test_seeds_and_shards():
    assert sorted(sum((shard_indices(11, r, 3) for r in range(3)), [])) == list(range(11))
    assert shard_indices(5, 1, 2) == [1, 3]
    seeds = {sample_seed(0, i) for i in range(100)} | {sample_seed(1, i) for i in range(100)}
    assert len(seeds) == 200 and sample_seed(0, 1) != sample_seed(1, 0)
    assert sample_seed(3, 7) == sample_seed(3, 7) < 2**63


def test_per_sample_seeds_do_not_depend_on_the_batch():
    from test_addp import tiny_addp
    model = tiny_addp().eval()
    a = model.generate(4, steps=3, seeds=[5, 6, 7, 8])
    b = model.generate(2, steps=3, seeds=[8, 6])
    torch.testing.assert_close(a[[3, 1]], b, atol=1e-4, rtol=0)  # float rounding only
    assert (a[0] - a[1]).abs().max() > 0.05
    with pytest.raises(ValueError, match='2 seeds / generators for 3 samples'):
        model.generate(3, steps=2, seeds=[1, 2])


# ------------------------------------------------------------ feature nets
def test_missing_inception_weights_is_a_clear_error(tmp_path):
    missing = str(tmp_path / 'inception.pth')
    with pytest.raises(FileNotFoundError) as err:
        InceptionFeatureNet(missing)
    assert missing in str(err.value) and INCEPTION_FILE in str(err.value)
    with pytest.raises(FileNotFoundError, match=INCEPTION_FILE):
        build_feature_net(dict(type='inception'))
    (tmp_path / 'samples').mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'samples' / '000000.png')
    eval_fid = _load_tool('eval_fid')
    with pytest.raises(FileNotFoundError, match=INCEPTION_FILE):
        eval_fid.main([str(tmp_path / 'samples'), str(tmp_path / 'samples'), '--weights', missing])
    with pytest.raises(ValueError, match="'inception' or 'classifier'"):
        build_feature_net(dict(type='vgg'))


def _random_inception_weights(path):
    """torch-fidelity's Inception with random weights (conv weights scaled so
    that activations keep their size through the depth), saved as the file
    its ``feature_extractor_weights_path`` reads."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe
    with mock.patch.object(fe, 'load_state_dict_from_url', return_value={}), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, 'load_state_dict',
                              lambda self, state: None):
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3('inception-v3-compat', ['2048'])
    state = net.state_dict()
    for key, value in state.items():
        if key.endswith('conv.weight'):
            value.mul_(math.sqrt(6))
    torch.save(state, path)


def test_inception_feature_net_through_torch_fidelity(tmp_path):
    weights = str(tmp_path / INCEPTION_FILE)
    _random_inception_weights(weights)
    net = build_feature_net(
        dict(type='inception', weights_path=weights, batch_size=8, isc_splits=1, save_cpu_ram=True))
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=gen)
    b = (torch.rand(3, 3, 32, 32, generator=gen) * 80).to(torch.uint8)
    other = net.compute_metrics(a, list(b))  # a tensor and a list of images
    assert other['fid'] > 1 and set(other) == {'fid', 'is_mean', 'is_std'}
    assert all(math.isfinite(v) for v in other.values()) and other['is_mean'] >= 1 - 1e-6
    bad = tmp_path / 'not_inception.pth'
    torch.save({'fc.weight': torch.zeros(2, 2)}, bad)
    with pytest.raises(ValueError, match='not the inception-v3-compat weights'):
        InceptionFeatureNet(str(bad)).compute_metrics(a, b)


@pytest.fixture(scope='module')
def classifier_net():
    torch.manual_seed(0)
    return ClassifierFeatureNet(CLS_CFG, batch_size=5, is_splits=1, device='cpu')


def test_classifier_feature_net(tmp_path, classifier_net):
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=gen)
    b = (torch.rand(12, 3, 32, 32, generator=gen) * 60).to(torch.uint8)
    feats, probs = classifier_net.features(a)
    assert feats.shape == (12, 32) and probs.shape == (12, 2)
    torch.testing.assert_close(probs.sum(1), torch.ones(12, dtype=torch.float64))
    same = classifier_net.compute_metrics(a, a)
    other = classifier_net.compute_metrics(a, b)
    assert same['fid'] == pytest.approx(0, abs=1e-6) and other['fid'] > 1e-3
    # one split: IS = exp(mean KL(p(y|x) || p(y))), written out
    p = probs.double()
    ref_is = torch.exp((p * (p.log() - p.mean(0, keepdim=True).log())).sum(1).mean())
    assert other['is_mean'] == pytest.approx(float(ref_is), rel=1e-6)
    # statistics prepared once give the same numbers
    prepared = classifier_net.prepare_reference(b)
    assert classifier_net.compute_metrics(a, prepared)['fid'] == pytest.approx(other['fid'])
    # a checkpoint of the classifier round-trips; other checkpoints are refused
    ckpt = tmp_path / 'cls.pth'
    torch.save({'state_dict': classifier_net.model.state_dict()}, ckpt)
    loaded = ClassifierFeatureNet(CLS_CFG, str(ckpt), device='cpu')
    torch.testing.assert_close(loaded.features(a)[0], feats)
    torch.save({'state_dict': {'decoder_embed.weight': torch.zeros(2)}}, tmp_path / 'other.pth')
    with pytest.raises(ValueError, match='not a checkpoint of this feature network'):
        ClassifierFeatureNet(CLS_CFG, str(tmp_path / 'other.pth'))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        ClassifierFeatureNet(CLS_CFG, str(tmp_path / 'nope.pth'))
    with pytest.raises(FileNotFoundError, match='config not found'):
        ClassifierFeatureNet(str(tmp_path / 'nope.py'))
    # images of different sizes need input_size
    (tmp_path / 'mixed').mkdir()
    for i, size in enumerate((32, 32, 16)):
        Image.fromarray(np.full((size, size, 3), 40 * i,
                                np.uint8)).save(tmp_path / 'mixed' / f'{i}.png')
    with pytest.raises(ValueError, match='images of different sizes'):
        classifier_net.compute_metrics(str(tmp_path / 'mixed'), a)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='Image folder not found'):
        list_image_files(str(tmp_path / 'missing'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='No PNG or JPEG images'):
        list_image_files(str(tmp_path / 'empty'))
    (tmp_path / 'empty' / 'grid.png').write_bytes(b'')
    with pytest.raises(ValueError, match='No PNG or JPEG images'):
        list_image_files(str(tmp_path / 'empty'), exclude=['grid.png'])


# ---------------------------------------------------------- tools/generate
TINY_ADDP = """
_base_ = [{demo!r}]
num_codes = 64
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, num_layers=2, num_heads=2)),
    neck=dict(in_channels=32, embed_dims=32, depth=1, num_heads=2, vocab_size=num_codes + 2),
    tokenizer=dict(code_dim=16, num_codes=num_codes, norm_groups=4, checkpoint=None),
    token_predictor=dict(arch=dict(embed_dims=32, depth=1, num_heads=2, decoder_embed_dims=32,
                                   decoder_depth=1, decoder_num_heads=2),
                         codebook_size=num_codes, class_id=num_codes, checkpoint=None))
"""


@pytest.fixture(scope='module')
def tiny_generator(tmp_path_factory):
    """A tiny ADDP config without dataloaders and a random-weight checkpoint
    that carries its (random) tokenizer and token predictor."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmaddp.registry import MODELS
    root = tmp_path_factory.mktemp('tiny_generator')
    base = root / 'tiny_addp.py'
    base.write_text(TINY_ADDP.format(demo=DEMO_ADDP_CFG))
    nodata = root / 'tiny_addp_nodata.py'
    nodata.write_text("_base_ = ['tiny_addp.py']\n"
                      'train_dataloader = None\nval_dataloader = None\ntest_dataloader = None\n')
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(base)).model)
    model.init_weights()
    state = dict(model.state_dict())
    for name, part in model._frozen_parts.items():
        state.update({f'{name}.{k}': v for k, v in part.state_dict().items()})
    ckpt = root / 'tiny_addp_random.pth'
    torch.save({'state_dict': state, 'meta': {}}, ckpt)
    return dict(config=str(base), nodata=str(nodata), checkpoint=str(ckpt), root=root, state=state)


GEN_ARGS = ['--num-samples', '5', '--steps', '3', '--seed', '7']


def test_generation_inferencer(tmp_path, tiny_generator):
    """mmengine BaseInferencer workflow: predictions and grid returned,
    samples and grid written, each sample from its own seed."""
    from mmaddp.apis import ADDPGenerationInferencer
    from mmaddp.utils.generation import to_uint8
    inferencer = ADDPGenerationInferencer(
        tiny_generator['nodata'], tiny_generator['checkpoint'], device='cpu')
    out = tmp_path / 'samples'
    result = inferencer(5, batch_size=2, seed=7, steps=3, out_dir=str(out), nrow=5)
    preds = result['predictions']
    assert [p['index'] for p in preds] == list(range(5))
    assert [p['seed'] for p in preds] == [sample_seed(7, i) for i in range(5)]
    assert all(p['image'].shape == (32, 32, 3) and p['image'].dtype == np.uint8 for p in preds)
    (grid, ) = result['visualization']
    assert grid.shape == (36, 2 + 5 * 34, 3)
    assert sorted(os.listdir(out)) == [f'{i:06d}.png' for i in range(5)] + ['grid.png']
    np.testing.assert_array_equal(_read(out / 'grid.png'), grid)
    for p in preds:
        np.testing.assert_array_equal(_read(out / f"{p['index']:06d}.png"), p['image'])
    # by hand: the model with the same per-sample seeds, in the same batches
    # of 2 (the config's frozen_precision='auto' holds the frozen parts in
    # bf16 on a bf16 CPU, where the batch's make-up moves the rounding of
    # ~6 % of the pixels by one level): the same numbers exactly
    seeds = [p['seed'] for p in preds]
    expect = to_uint8(
        torch.cat([
            inferencer.model.generate(len(seeds[i:i + 2]), seeds=seeds[i:i + 2], steps=3)
            for i in range(0, 5, 2)
        ]))
    for p, image in zip(preds, expect):
        np.testing.assert_array_equal(p['image'], image.permute(1, 2, 0).numpy())
    # a later call with other indices and batches gives the same sample 3
    (again, ) = inferencer([3], seed=7, steps=3, return_datasamples=True)['predictions']
    assert again['image'].shape == (3, 32, 32)
    diff = np.abs(to_uint8(again['image']).permute(1, 2, 0).numpy().astype(int) - preds[3]['image'])
    assert diff.max() <= 1
    with pytest.raises(ValueError, match='number of samples or a list of sample indices'):
        inferencer('five')
    with pytest.raises(ValueError, match="unknown sampler 'gan'"):
        ADDPGenerationInferencer(
            tiny_generator['nodata'], tiny_generator['checkpoint'], sampler='gan')
    with pytest.raises(FileNotFoundError, match='Config file not found'):
        ADDPGenerationInferencer(str(tmp_path / 'none.py'), tiny_generator['checkpoint'])


def test_generation_inferencer_release_start(tmp_path, tiny_generator):
    """``start_from``: sample i starts from the i-th image of the folder
    (sorted, recursive, cycling): the same as ``ADDP.generate`` with those
    images as ``start_images``; folder errors are one line each."""

    from mmaddp.apis import ADDPGenerationInferencer
    from mmaddp.utils.generation import to_uint8
    folder = tmp_path / 'val'
    rng = np.random.default_rng(0)
    pictures = []
    for j, sub in enumerate(['a', 'a', 'b']):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        pictures.append(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        Image.fromarray(pictures[-1]).save(folder / sub / f'{j}.png')
    inferencer = ADDPGenerationInferencer(
        tiny_generator['nodata'],
        tiny_generator['checkpoint'],
        device='cpu',
        start_from=str(folder))
    preds = inferencer(4, batch_size=4, seed=7, steps=3, return_datasamples=True)['predictions']
    starts = torch.stack(
        [torch.from_numpy(pictures[i % 3]).permute(2, 0, 1) / 255 for i in range(4)])
    expect = inferencer.model.generate(
        4, seeds=[sample_seed(7, i) for i in range(4)], steps=3, start_images=starts)
    for p, image in zip(preds, expect):
        assert torch.equal(to_uint8(p['image']), to_uint8(image))
    calls = []
    real = inferencer.model.generate
    with mock.patch.object(inferencer.model, 'generate',
                           lambda *a, **k: calls.append(k) or real(*a, **k)):
        inferencer([4, 1], batch_size=2, seed=7, steps=1)
    torch.testing.assert_close(calls[0]['start_images'], starts[[1, 1]], atol=0, rtol=0)
    with pytest.raises(FileNotFoundError, match='start_from folder not found'):
        ADDPGenerationInferencer(
            tiny_generator['nodata'], tiny_generator['checkpoint'], start_from=str(tmp_path / 'x'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='holds no image'):
        ADDPGenerationInferencer(
            tiny_generator['nodata'],
            tiny_generator['checkpoint'],
            start_from=str(tmp_path / 'empty'))
    with pytest.raises(ValueError, match="not of 'noise'"):
        ADDPGenerationInferencer(
            tiny_generator['nodata'],
            tiny_generator['checkpoint'],
            sampler='noise',
            start_from=str(folder))
    Image.fromarray(pictures[0][:16, :16]).save(folder / 'b' / '9.png')  # another size
    small = ADDPGenerationInferencer(
        tiny_generator['nodata'],
        tiny_generator['checkpoint'],
        device='cpu',
        start_from=str(folder))
    with pytest.raises(ValueError, match='9.png is \\(16, 16\\)'):
        small(4, batch_size=4, steps=1)


def test_generate_one_vs_two_processes(tmp_path, tiny_generator):
    from mmengine.config import Config
    cfg = Config.fromfile(tiny_generator['nodata'])
    assert cfg.train_dataloader is None and cfg.val_dataloader is None
    one, two = tmp_path / 'one', tmp_path / 'two'
    _subprocess([
        sys.executable, 'tools/generate.py', tiny_generator['nodata'], tiny_generator['checkpoint'],
        '--out',
        str(one), '--batch-size', '2', *GEN_ARGS
    ])
    proc = _subprocess([
        'bash', 'tools/dist_generate.sh', tiny_generator['config'], tiny_generator['checkpoint'],
        '2', '--out',
        str(two), '--batch-size', '3', *GEN_ARGS, '--cfg-options', 'train_dataloader=None'
    ],
                       PORT=str(_free_port()))
    assert '5 samples (2 process(es)' in proc.stdout
    names = [f'{i:06d}.png' for i in range(5)]
    for folder in (one, two):
        assert sorted(os.listdir(folder)) == names + ['grid.png']
        images = [_read(folder / n) for n in names]
        assert all(im.shape == (32, 32, 3) for im in images)
        for i in range(5):
            for j in range(i):
                assert not np.array_equal(images[i], images[j]), (i, j)
        assert _read(folder / 'grid.png').shape == (36, 2 + 5 * 34, 3)  # one row of 5
    for n in names:  # same samples, whatever the ranks and batch sizes
        a, b = _read(one / n).astype(int), _read(two / n).astype(int)
        assert np.abs(a - b).max() <= 1 and (a == b).mean() > 0.99, n  # float rounding only


def test_generate_refuses_bad_input(tmp_path, tiny_generator):
    generate = _load_tool('generate')
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'notes.txt').write_text('keep')
    args = [
        tiny_generator['nodata'], tiny_generator['checkpoint'], '--out',
        str(out), '--num-samples', '2', '--steps', '2'
    ]
    with pytest.raises(FileExistsError, match='not empty.*--overwrite'):
        generate.main(args)
    with pytest.raises(FileNotFoundError, match='Checkpoint file not found'):
        generate.main([
            tiny_generator['nodata'],
            str(tmp_path / 'nope.pth'), '--out',
            str(tmp_path / 'fresh')
        ])
    # wrong kinds of checkpoint: a tokenizer's, a classifier's (encoder only)
    torch.save({'state_dict': {
        'encoder.conv_in.weight': torch.zeros(16, 3, 3, 3)
    }}, tmp_path / 'tok.pth')
    with pytest.raises(ValueError, match='not an ADDP checkpoint'):
        generate.main(
            [tiny_generator['nodata'],
             str(tmp_path / 'tok.pth'), '--out',
             str(tmp_path / 'fresh')])
    torch.save(
        {
            'state_dict': {  # an mmaddp classifier: an encoder, but no decoder
                'backbone.cls_token': torch.zeros(1, 1, 32),
                'backbone.patch_embed.proj.weight': torch.zeros(32, 3, 4, 4),
                'backbone.blocks.0.attn.qkv.weight': torch.zeros(96, 32),
                'head.fc.weight': torch.zeros(2, 32)
            }
        },
        tmp_path / 'cls.pth')
    with pytest.raises(ValueError, match='lacks trained ADDP weights'):
        generate.main(
            [tiny_generator['nodata'],
             str(tmp_path / 'cls.pth'), '--out',
             str(tmp_path / 'fresh')])
    assert not osp.exists(tmp_path / 'fresh')  # nothing written before the checks
    # no weights for the frozen parts anywhere
    trained_only = {
        k: v
        for k, v in tiny_generator['state'].items()
        if not k.startswith(('tokenizer.', 'token_predictor.'))
    }
    torch.save({'state_dict': trained_only}, tmp_path / 'trained_only.pth')
    with pytest.raises(ValueError, match=r"No weights for \['tokenizer', 'token_predictor'\]"):
        generate.main([
            tiny_generator['nodata'],
            str(tmp_path / 'trained_only.pth'), '--out',
            str(tmp_path / 'fresh')
        ])
    # --overwrite replaces samples and grid of an earlier, larger run, keeps other files
    for i in range(4):
        (out / f'{i:06d}.png').write_bytes(b'stale')
    generate.main(args + ['--overwrite', '--batch-size', '1'])
    assert sorted(os.listdir(out)) == ['000000.png', '000001.png', 'grid.png', 'notes.txt']


def test_eval_fid_tool_with_a_classifier(tmp_path, tiny_generator, tiny_cls_root, classifier_net):
    from mmaddp.evaluation.generation_metrics import UInt8Images
    generate, eval_fid = _load_tool('generate'), _load_tool('eval_fid')
    samples = tmp_path / 'samples'
    generate.main([
        tiny_generator['nodata'], tiny_generator['checkpoint'], '--out',
        str(samples), '--num-samples', '6', '--steps', '2'
    ])
    ckpt = tmp_path / 'feature_net.pth'  # the fixture's classifier, so IS can be written out
    torch.save({'state_dict': classifier_net.model.state_dict()}, ckpt)
    record = eval_fid.main([
        str(samples),
        osp.join(tiny_cls_root, 'val'), '--feature-config', CLS_CFG, '--feature-checkpoint',
        str(ckpt), '--splits', '1', '--out',
        str(tmp_path / 'fid.json')
    ])
    with open(tmp_path / 'fid.json') as f:
        saved = json.load(f)
    assert saved == record and record['num_samples'] == 6  # grid.png left out
    assert record['num_reference'] == 8 and record['network'] == 'classifier'
    assert math.isfinite(record['fid']) and record['fid'] > 0
    # IS of the files the tool read (grid.png left out), written out
    images = UInt8Images(str(samples), exclude=('grid.png', ))
    p = classifier_net.features(torch.stack([images[i] for i in range(len(images))]))[1].double()
    ref_is = torch.exp((p * (p.log() - p.mean(0, keepdim=True).log())).sum(1).mean())
    assert record['is_mean'] == pytest.approx(float(ref_is), rel=1e-6)
    with pytest.raises(FileNotFoundError, match='Image folder not found'):
        eval_fid.main([str(tmp_path / 'none'), str(samples), '--feature-config', CLS_CFG])


# ----------------------------------------------------- GenerationEvalHook
HOOK_CFG = """
_base_ = ['tiny_addp.py']
data_root = {data_root!r}
train_dataloader = dict(batch_size=8, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = None
test_dataloader = None
ref_loader = dict(
    batch_size=16, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='val', with_label=False,
                 pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
feature_net = dict(type='classifier', config={cls_cfg!r}, is_splits=1)
custom_hooks = [
    dict(type='GenerationEvalHook', interval=2, num_samples=6, batch_size=4, steps=2,
         feature_net=feature_net, ref_dataloader=ref_loader, ref_num_images=40),
    dict(type='GenerationEvalHook', interval=100, num_samples=4, steps=2,
         feature_net=feature_net, ref_dir={ref_dir!r}, prefix='gen_dir'),
]
train_cfg = dict(max_iters=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=2, end=4),
]
default_hooks = dict(checkpoint=dict(interval=4), logger=dict(interval=1))
"""


def test_generation_eval_hook_in_training(tmp_path, tiny_generator, demo_root, tiny_cls_root):
    cfg = tiny_generator['root'] / 'tiny_addp_hook.py'
    cfg.write_text(
        HOOK_CFG.format(
            data_root=osp.join(demo_root, 'pretrain'),
            cls_cfg=CLS_CFG,
            ref_dir=osp.join(tiny_cls_root, 'val')))
    work = tmp_path / 'work'
    _subprocess([sys.executable, 'tools/train.py', str(cfg), '--work-dir', str(work)])
    (run_dir, ) = [d for d in os.listdir(work) if osp.isdir(work / d / 'vis_data')]
    vis = work / run_dir / 'vis_data'
    with open(vis / 'scalars.json') as f:
        rows = [json.loads(line) for line in f if line.strip()]
    fid = {r['step']: r['generation/fid'] for r in rows if 'generation/fid' in r}
    assert sorted(fid) == [2, 4] and all(math.isfinite(v) and v >= 0 for v in fid.values())
    assert any(r['step'] == 4 and 1 - 1e-9 <= r['generation/is_mean'] <= 2 + 1e-9 for r in rows
               if 'generation/is_mean' in r)
    # the ref_dir hook never hit its interval: it ran once, after training
    gen_dir = [(r['step'], r['gen_dir/fid']) for r in rows if 'gen_dir/fid' in r]
    assert len(gen_dir) == 1 and gen_dir[0][0] == 4 and math.isfinite(gen_dir[0][1])
    for step in (2, 4):
        grid = _read(vis / 'vis_image' / f'generation_grid_{step}.png')
        assert grid.shape == (36, 2 + 6 * 34, 3) and grid.std() > 0
    assert osp.isfile(vis / 'vis_image' / 'gen_dir_grid_4.png')
    log = open(work / run_dir / f'{run_dir}.log').read()
    assert 'Generation at step 2 (6 samples): fid:' in log


def test_confident_share():
    from mmaddp.evaluation.generation_metrics import confident_share
    probs = [[0.95, 0.05], [0.5, 0.5], [0.1, 0.9], [0.89, 0.11]]
    assert confident_share(probs) == pytest.approx(50.0)
    assert confident_share(probs, threshold=0.5) == pytest.approx(100.0)
    # the top probabilities alone (what the classifier extractor keeps)
    assert confident_share([0.95, 0.5, 0.9, 0.89]) == pytest.approx(50.0)
    with pytest.raises(ValueError, match='N x C'):
        confident_share(np.ones((2, 2, 2)))


def test_reference_samplers_and_predictor_sampler(tmp_path, tiny_generator):
    """--sampler start writes ADDP's start image every time, noise differs per
    sample, predictor runs the token predictor alone (needs checkpoints)."""
    for sampler in ('start', 'noise'):
        out = tmp_path / sampler
        _subprocess([
            sys.executable, 'tools/generate.py', tiny_generator['nodata'],
            tiny_generator['checkpoint'], '--sampler', sampler, '--out',
            str(out), *GEN_ARGS
        ])
        images = [np.asarray(Image.open(out / f'{i:06d}.png')) for i in range(5)]
        same = all(np.array_equal(images[0], im) for im in images[1:])
        assert same == (sampler == 'start')
    proc = subprocess.run([
        sys.executable, 'tools/generate.py', tiny_generator['nodata'], tiny_generator['checkpoint'],
        '--sampler', 'predictor', '--out',
        str(tmp_path / 'pred'), *GEN_ARGS
    ],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode != 0 and "needs model.<part>.checkpoint for ['tokenizer'" in proc.stderr
