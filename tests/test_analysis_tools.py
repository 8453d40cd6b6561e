"""tools/analysis_tools: the linear probe of a frozen encoder and the
tokenizer's reconstructions of a folder."""
import json
import os
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, run

CLS_CFG = osp.join(ROOT, 'tests', 'configs', 'tiny_cls.py')


def _reference_probe(root, per_class, C):
    """The probe computed independently: the same random encoder (seed 0),
    images normalised by hand, the first ``per_class`` files of each class."""
    from mmengine.registry import init_default_scope
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from mmaddp.registry import MODELS
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    encoder = MODELS.build(
        dict(
            type='ADDPViT',
            arch=dict(embed_dims=32, num_layers=2, num_heads=2),
            img_size=32,
            patch_size=8,
            out_type='raw',
            final_norm=True,
            pre_norm=True)).eval()
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)

    def features(split, limit=None):
        x, y = [], []
        for label in (0, 1):
            folder = osp.join(root, split, f'class_{label}')
            for name in sorted(os.listdir(folder))[:limit]:
                x.append(np.asarray(Image.open(osp.join(folder, name)).convert('RGB')))
                y.append(label)
        x = (torch.from_numpy(np.stack(x)).permute(0, 3, 1, 2).float() - mean) / std
        with torch.no_grad():
            return encoder(x)[-1].flatten(1).numpy(), np.array(y)

    x_train, y_train = features('train', per_class)
    x_val, y_val = features('val')
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(C=C, max_iter=2000).fit(scaler.transform(x_train), y_train)
    return 100.0 * float((clf.predict(scaler.transform(x_val)) == y_val).mean())


def test_linear_probe_against_an_independent_computation(tmp_path, tiny_cls_root):
    results = {}
    for per_class, features in ((6, 'tokens'), (5, 'pooled')):
        out = tmp_path / f'{per_class}.json'
        run([
            'tools/analysis_tools/linear_probe.py', CLS_CFG, '--random', '--train-per-class',
            str(per_class), '--features', features, '--C', '1.0', '--out',
            str(out), '--cfg-options', f'test_dataloader.dataset.data_root={tiny_cls_root}'
        ])
        results[per_class] = json.loads(out.read_text())
    tokens, pooled = results[6], results[5]
    assert tokens['train_images'] == 12 and tokens['val_images'] == 8
    assert tokens['dims'] == (1 + 16) * 32  # pico: width 32, 4 x 4 patches + class token
    assert tokens['top1'] == pytest.approx(_reference_probe(tiny_cls_root, 6, 1.0))
    assert pooled['train_images'] == 10 and pooled['dims'] == 2 * 32


def test_linear_probe_refuses_bad_input(tmp_path):
    import subprocess
    import sys
    for args, message in (([CLS_CFG], 'give a CHECKPOINT or --random'),
                          ([CLS_CFG, str(tmp_path / 'none.pth')], 'checkpoint file not found')):
        proc = subprocess.run([sys.executable, 'tools/analysis_tools/linear_probe.py', *args],
                              cwd=ROOT,
                              capture_output=True,
                              text=True)
        assert proc.returncode != 0 and message in proc.stderr


def test_reconstructions_keep_the_folder_layout(tmp_path, tiny_cls_root):
    from mmengine.registry import init_default_scope

    from mmaddp.registry import MODELS
    cfg = tmp_path / 'tok.py'
    model = dict(
        type='VQTokenizer',
        base_channels=8,
        channel_mults=(1, 2),
        num_res_blocks=1,
        code_dim=8,
        num_codes=16,
        norm_groups=4)
    cfg.write_text(f"default_scope = 'mmpretrain'\nmodel = {model!r}\n")
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    tokenizer = MODELS.build(model).eval()
    ckpt = tmp_path / 'tok.pth'
    torch.save({'state_dict': tokenizer.state_dict()}, ckpt)
    src, out = osp.join(tiny_cls_root, 'val'), tmp_path / 'recon'
    proc = run(['tools/analysis_tools/reconstruct.py', str(cfg), str(ckpt), src, str(out)])
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob('*.png'))
    assert files == [f'class_{c}/{i:03d}.png' for c in (0, 1) for i in range(4)]
    # each file is decode(encode(image)) of its source
    img = np.asarray(Image.open(osp.join(src, 'class_1', '002.png')).convert('RGB'))
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expect = tokenizer.decode_ids(tokenizer.encode(x)[0]).clamp(0, 1)
    expect = expect.mul(255).add(0.5).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    got = np.asarray(Image.open(out / 'class_1' / '002.png'))
    assert np.abs(got.astype(int) - expect.astype(int)).max() <= 1
    psnr = json.loads(proc.stdout.strip().splitlines()[-1])['psnr']
    assert 0 < psnr < 60
    with pytest.raises(AssertionError):  # a non-empty output folder is refused
        run(['tools/analysis_tools/reconstruct.py', str(cfg), str(ckpt), src, str(out)])
