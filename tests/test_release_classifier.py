"""A classifier fine-tuned by the authors' code (MAE-style ViT with global
pooling: ``fc_norm`` and ``head`` at top level) loads into ``ADDPViT`` and
into the ImageNet config, and ``tools/test.py`` scores it; timm's
VisionTransformer, which has exactly the release's fine-tuning layout, is the
independent reference."""
import ast
import os
import os.path as osp
import pickle
import subprocess
import sys
from functools import partial

import pytest
import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from mmaddp.models import ADDPViT
from release_layouts import classifier_checkpoint

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
IMAGENET_CFG = osp.join(ROOT, 'configs', 'imagenet',
                        'addp-vit-base-p16_8xb128-amp-coslr-100e_in1k-256px.py')
NANO = dict(embed_dims=64, num_layers=4, num_heads=4)  # ADDPViT arch 'nano'


def timm_classifier(state, img_size, num_classes):
    """The release's fine-tuning model: timm ViT, mean of patch tokens,
    fc_norm, head; no pre-block norm, no final norm."""
    dim = state['cls_token'].shape[-1]
    depth = len({k.split('.')[1] for k in state if k.startswith('blocks.')})
    ref = VisionTransformer(
        img_size=img_size,
        patch_size=16,
        embed_dim=dim,
        depth=depth,
        num_heads=4,
        qkv_bias=True,
        global_pool='avg',
        fc_norm=True,
        num_classes=num_classes,
        norm_layer=partial(nn.LayerNorm, eps=1e-6))
    ref.load_state_dict(state, strict=True)  # the release layout is timm's, key for key
    return ref.eval()


def test_release_classifier_loads_into_addp_vit(tmp_path):
    ckpt = classifier_checkpoint(dim=64, depth=4, grid=4, num_classes=10)
    path = tmp_path / 'addp-vit-base-16-finetuned.pth'
    torch.save(ckpt, path)
    backbone = ADDPViT(
        arch='nano',
        img_size=64,
        out_type='avg_featmap',
        pre_norm=False,
        final_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    backbone.init_weights()
    state = ckpt['model']
    assert torch.equal(backbone.pooled_norm.weight, state['fc_norm.weight'])
    assert torch.equal(backbone.pooled_norm.bias, state['fc_norm.bias'])
    ref = timm_classifier(state, 64, 10)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = backbone.eval()(x)[0]
        expect = ref.forward_head(ref.forward_features(x), pre_logits=True)
    torch.testing.assert_close(pooled, expect, atol=1e-5, rtol=0)


def _write_config(tmp_path, root):
    """The ImageNet ViT-B/16 config at width 64 (arch 'nano'), 2 classes, the
    tiny ImageNet-layout folder as its test set, no workers."""
    path = tmp_path / 'imagenet_nano.py'
    path.write_text(f"""_base_ = [{IMAGENET_CFG!r}]
model = dict(backbone=dict(arch='nano'), head=dict(in_channels=64, num_classes=2))
data_preprocessor = dict(num_classes=2)
test_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, pin_memory=False,
                       dataset=dict(data_root={str(root)!r},
                                    metainfo=dict(classes=['class_0', 'class_1'])))
test_evaluator = dict(topk=(1, ))
""")
    return str(path)


def _test_tool(config, checkpoint, work_dir, *extra):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    return subprocess.run([
        sys.executable, 'tools/test.py', config,
        str(checkpoint), '--work-dir',
        str(work_dir), *extra
    ],
                          cwd=ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)


def test_test_tool_scores_a_release_classifier(tmp_path, tiny_cls_root):
    ckpt = classifier_checkpoint(dim=64, depth=4, grid=16, num_classes=2, seed=3)
    path = tmp_path / 'finetuned.pth'
    torch.save(ckpt, path)
    out = tmp_path / 'preds.pkl'
    config = _write_config(tmp_path, tiny_cls_root)
    proc = _test_tool(config, path, tmp_path / 'work', '--out', str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    with open(out, 'rb') as f:
        preds = pickle.load(f)

    # the same images through timm's ViT with the file loaded as it is
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS, MODELS
    cfg = Config.fromfile(config)
    init_default_scope('mmpretrain')
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    preprocessor = MODELS.build(dict(type='ClsDataPreprocessor', **cfg.data_preprocessor))
    ref = timm_classifier(ckpt['model'], 256, 2)
    assert len(preds) == len(dataset) == 8
    correct = 0
    for i, pred in enumerate(preds):
        item = dataset[i]
        batch = preprocessor(dict(inputs=[item['inputs']], data_samples=[item['data_samples']]))
        with torch.no_grad():
            scores = ref(batch['inputs']).softmax(-1)[0]
        torch.testing.assert_close(pred['pred_score'], scores, atol=1e-5, rtol=1e-4)
        correct += int(scores.argmax()) == int(item['data_samples'].gt_label)
    assert metrics['accuracy/top1'] == pytest.approx(100.0 * correct / len(preds))


def test_release_classifier_that_does_not_fit_the_config_is_refused(tmp_path, tiny_cls_root):
    ckpt = classifier_checkpoint(dim=64, depth=4, grid=16, num_classes=2)
    del ckpt['model']['fc_norm.weight'], ckpt['model']['fc_norm.bias']
    path = tmp_path / 'no_fc_norm.pth'
    torch.save(ckpt, path)
    proc = _test_tool(_write_config(tmp_path, tiny_cls_root), path, tmp_path / 'work')
    assert proc.returncode != 0
    assert "missing ['backbone.pooled_norm.weight'" in proc.stderr
