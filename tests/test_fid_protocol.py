"""The paper's FID protocol: the demo classifier registered as torch-fidelity
feature extractor (FID / IS / confident share against a scipy / numpy
reference on features computed here, independently of the extractor),
tools/eval_fid.py's single code path (classifier, and the refusal of a
missing Inception weights file) and
tools/dataset_converters/prepare_fid_reference.py (against PIL)."""
import json
import os
import os.path as osp
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import scipy.linalg
import torch
import torch_fidelity
from PIL import Image
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from mmaddp.evaluation.generation_metrics import (CLASSIFIER_EXTRACTOR, DEFAULT_INCEPTION_WEIGHTS,
                                                  ClassifierFeatureExtractor, ClassifierFeatureNet,
                                                  InceptionFeatureNet, UInt8Images)
from conftest import ROOT, load_tool

CLS_CFG = osp.join(ROOT, 'tests', 'configs', 'tiny_cls.py')
INCEPTION_FILE = 'weights-inception-2015-12-05-6726825d.pth'
HEAD_SCALE = 30  # random head x 30: top probabilities spread around 0.9 (share ~ 1/3)


def _tool_subprocess(args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    env.pop('MMADDP_TRACEBACK', None)
    return subprocess.run([sys.executable, *args],
                          cwd=cwd,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)


@pytest.fixture(scope='module')
def classifier_ckpt(tmp_path_factory):
    """A checkpoint of the tiny classifier: random weights, head scaled so
    that the class probabilities are neither uniform nor all confident."""
    from mmaddp.evaluation.generation_metrics import build_classifier
    torch.manual_seed(0)
    model = build_classifier(CLS_CFG)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state['head.fc.weight'] *= HEAD_SCALE
    path = tmp_path_factory.mktemp('fid_cls') / 'cls.pth'
    torch.save({'state_dict': state}, path)
    return dict(path=str(path), state=state)


@pytest.fixture(scope='module')
def image_sets():
    """Two sets of 32 px uint8 images, more images than feature dimensions
    (32), so that the covariances have full rank and sqrtm is well posed."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8, generator=gen)
    b = (torch.rand(40, 3, 32, 32, generator=gen) * 120 + 40).to(torch.uint8)
    return a, b


@torch.no_grad()
def reference_outputs(state, images):
    """Pooled features and logits of the tiny classifier written out from
    its parts: RGB normalised with the config's mean / std, the ViT's
    average-pooled tokens, the linear head."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(CLS_CFG)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.load_state_dict(state)  # strict: every weight is the checkpoint's
    model.eval()
    mean = torch.tensor(cfg.data_preprocessor.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data_preprocessor.std).view(1, 3, 1, 1)
    pooled = model.backbone((images.float() - mean) / std)[-1]
    logits = model.head.fc(pooled)
    return pooled.double().numpy(), logits.double().numpy()


def scipy_fid(feats1, feats2):
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), with scipy's sqrtm."""
    mu1, mu2 = feats1.mean(0), feats2.mean(0)
    s1, s2 = np.cov(feats1, rowvar=False), np.cov(feats2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    assert np.abs(covmean.imag).max() < 1e-6 * np.abs(covmean.real).max()
    return float(np.sum((mu1 - mu2)**2) + np.trace(s1 + s2 - 2 * covmean.real))


def numpy_inception_score(logits, splits, shuffle=True):
    """exp(mean KL(p(y|x) || p(y))) per split, splits [i N / k, (i + 1) N / k)
    of the samples in the order of a seeded permutation (``shuffle``; the
    protocol of torch-fidelity's IS: ``RandomState(2020).permutation``)."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n = len(p)
    if shuffle:
        p = p[np.random.RandomState(2020).permutation(n)]
    scores = []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]
        kl = (part * (np.log(part) - np.log(part.mean(0, keepdims=True)))).sum(1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


# ----------------------------------------------- the registered extractor
def test_classifier_is_a_registered_feature_extractor():
    assert FEATURE_EXTRACTORS_REGISTRY[CLASSIFIER_EXTRACTOR] is ClassifierFeatureExtractor
    assert ClassifierFeatureExtractor.get_default_feature_layer_for_metric('fid') == 'pooled'
    assert (
        ClassifierFeatureExtractor.get_default_feature_layer_for_metric('isc') == 'logits_unbiased')


def test_calculate_metrics_with_the_classifier_matches_scipy(classifier_ckpt, image_sets):
    a, b = image_sets
    out = torch_fidelity.calculate_metrics(
        input1=UInt8Images(a),
        input2=UInt8Images(list(b)),
        fid=True,
        isc=True,
        isc_splits=4,
        feature_extractor=CLASSIFIER_EXTRACTOR,
        feature_extractor_weights_path=classifier_ckpt['path'],
        classifier_config=CLS_CFG,
        batch_size=7,  # batches that do not divide the sets
        cuda=False,
        cache=False,
        verbose=False,
        samples_shuffle=False,
        save_cpu_ram=True)
    feats_a, logits_a = reference_outputs(classifier_ckpt['state'], a)
    feats_b, _ = reference_outputs(classifier_ckpt['state'], b)
    expect_fid = scipy_fid(feats_a, feats_b)
    assert expect_fid > 1
    assert out['frechet_inception_distance'] == pytest.approx(expect_fid, rel=1e-6)
    is_mean, is_std = numpy_inception_score(logits_a, 4, shuffle=False)
    assert is_mean > 1.05 and is_std > 0  # not the trivial uniform-probability case
    assert out['inception_score_mean'] == pytest.approx(is_mean, rel=1e-6)
    assert out['inception_score_std'] == pytest.approx(is_std, rel=1e-5)


def test_classifier_feature_net_metrics_and_confident_share(classifier_ckpt, image_sets):
    a, b = image_sets
    net = ClassifierFeatureNet(
        CLS_CFG, classifier_ckpt['path'], batch_size=5, is_splits=3, device='cpu')
    feats_a, logits_a = reference_outputs(classifier_ckpt['state'], a)
    feats_b, logits_b = reference_outputs(classifier_ckpt['state'], b)
    got = net.compute_metrics(a, b)
    assert got['fid'] == pytest.approx(scipy_fid(feats_a, feats_b), rel=1e-6)
    assert (got['is_mean'], got['is_std']) == pytest.approx(
        numpy_inception_score(logits_a, 3), rel=1e-5)
    # share with top probability >= 0.9, of the samples only (not the reference)
    top = np.exp(logits_a.max(1)) / np.exp(logits_a).sum(1)
    expect_share = 100 * np.mean(top >= 0.9)
    assert 5 < expect_share < 95
    assert got['confident_share'] == pytest.approx(expect_share)
    swapped = net.compute_metrics(b, a)
    top_b = np.exp(logits_b.max(1)) / np.exp(logits_b).sum(1)
    assert swapped['confident_share'] == pytest.approx(100 * np.mean(top_b >= 0.9))
    # the features the net exposes are those of the reference forward
    pooled, probs = net.features(a)
    np.testing.assert_allclose(pooled.numpy(), feats_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.numpy().max(1), top, rtol=1e-6)
    # FID of a set against itself: 0
    assert net.compute_metrics(a, a)['fid'] == pytest.approx(0, abs=1e-6)
    # a set in class order (as the val folder is read): the shuffle before the
    # splits keeps IS from collapsing towards 1 (one class per split)
    order = np.argsort(logits_a.argmax(1), kind='stable')
    by_class = net.compute_metrics(a[torch.from_numpy(order)], b)['is_mean']
    assert by_class == pytest.approx(numpy_inception_score(logits_a[order], 3)[0], rel=1e-5)
    assert numpy_inception_score(logits_a[order], 3, shuffle=False)[0] < by_class - 0.05


def test_prepared_reference_reuses_cached_features(classifier_ckpt, image_sets):
    a, b = image_sets
    net = ClassifierFeatureNet(CLS_CFG, classifier_ckpt['path'], is_splits=2, device='cpu')
    direct = net.compute_metrics(a, b)
    prepared = net.prepare_reference(b)
    cache_root = prepared.cache_root
    assert sorted(os.listdir(cache_root)) == sorted([
        'reference-mmaddp-classifier-features-pooled.pt',
        'reference-mmaddp-classifier-features-logits_unbiased.pt',
        'reference-mmaddp-classifier-stat-fid-pooled.pt'
    ])
    calls = []
    original = ClassifierFeatureExtractor.forward

    def counting_forward(self, images):
        calls.append(len(images))
        return original(self, images)

    with mock.patch.object(ClassifierFeatureExtractor, 'forward', counting_forward):
        again = net.compute_metrics(a, prepared)
    assert sum(calls) == len(a)  # the reference came from the cache
    assert again == pytest.approx(direct, rel=1e-12)
    assert net.prepare_reference(prepared) is prepared
    other = ClassifierFeatureNet(CLS_CFG, classifier_ckpt['path'], device='cpu')
    with pytest.raises(ValueError, match='prepared by another feature net'):
        other.compute_metrics(a, prepared)
    del prepared
    import gc
    gc.collect()
    assert not osp.exists(cache_root)


def test_classifier_extractor_refuses_bad_arguments(classifier_ckpt, image_sets):
    a, b = image_sets
    common = dict(
        input1=UInt8Images(a[:4]),
        input2=UInt8Images(b[:4]),
        fid=True,
        feature_extractor=CLASSIFIER_EXTRACTOR,
        cuda=False,
        cache=False,
        verbose=False)
    with pytest.raises(ValueError, match='needs classifier_config'):
        torch_fidelity.calculate_metrics(**common)
    net = ClassifierFeatureNet(CLS_CFG, device='cpu')
    with pytest.raises(ValueError, match='not both'):
        torch_fidelity.calculate_metrics(
            **common, classifier_model=net.model, classifier_config=CLS_CFG)
    extractor = ClassifierFeatureExtractor(
        CLASSIFIER_EXTRACTOR, ['pooled'], classifier_model=net.model)
    with pytest.raises(ValueError, match='uint8 RGB B x 3 x H x W'):
        extractor(a.float())
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        torch_fidelity.calculate_metrics(
            **common, classifier_config=CLS_CFG, feature_extractor_weights_path='nope.pth')


# ------------------------------------------------------------ eval_fid.py
def test_eval_fid_refuses_missing_inception_weights(tmp_path):
    samples = tmp_path / 'samples'
    samples.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(samples / '000000.png')
    eval_fid = load_tool('eval_fid.py')
    # no --weights: the default path, named in the message; nothing is fetched
    with mock.patch.object(torch_fidelity, 'calculate_metrics') as calculate, \
            mock.patch('torch.hub.load_state_dict_from_url') as download:
        with pytest.raises(FileNotFoundError) as err:
            eval_fid.main([str(samples), str(samples)])
        assert not calculate.called and not download.called
    message = str(err.value)
    assert DEFAULT_INCEPTION_WEIGHTS in message and INCEPTION_FILE in message
    assert 'nothing is downloaded' in message
    with pytest.raises(FileNotFoundError, match='no path given'):
        InceptionFeatureNet(None)
    # the command line: one line on stderr, exit status 1
    proc = _tool_subprocess([osp.join(ROOT, 'tools', 'eval_fid.py'), 'samples', 'samples'],
                            cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith('eval_fid.py: error: Inception weights not found at '
                                f"'{DEFAULT_INCEPTION_WEIGHTS}'"), proc.stderr[-2000:]


def test_eval_fid_classifier_through_torch_fidelity(tmp_path, classifier_ckpt, image_sets, capsys):
    a, b = image_sets
    for name, images in (('samples', a), ('reference', b)):
        (tmp_path / name / 'sub').mkdir(parents=True)
        for i, image in enumerate(images):
            folder = tmp_path / name / ('sub' if i % 2 else '')
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f'{i:03d}.png')
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / 'samples' / 'grid.png')
    eval_fid = load_tool('eval_fid.py')
    calls = []
    original = torch_fidelity.calculate_metrics

    def recording(**kwargs):
        calls.append(kwargs)
        return original(**kwargs)

    with mock.patch.object(torch_fidelity, 'calculate_metrics', recording):
        record = eval_fid.main([
            str(tmp_path / 'samples'),
            str(tmp_path / 'reference'), '--feature-config', CLS_CFG, '--feature-checkpoint',
            classifier_ckpt['path'], '--splits', '2', '--batch-size', '16', '--out',
            str(tmp_path / 'fid.json')
        ])
    assert len(calls) == 1 and calls[0]['feature_extractor'] == CLASSIFIER_EXTRACTOR
    err = capsys.readouterr().err
    assert 'Processing samples' in err  # torch-fidelity's progress bar over the images
    with open(tmp_path / 'fid.json') as f:
        assert json.load(f) == record
    assert record['num_samples'] == 48 and record['num_reference'] == 40  # grid.png left out
    # the folders hold the same images as the tensors (PNG is lossless); the
    # files are read in sorted path order, which does not change FID
    files = sorted(
        osp.relpath(osp.join(r, n), tmp_path / 'samples')
        for r, _, ns in os.walk(tmp_path / 'samples') for n in ns if n != 'grid.png')
    order = [int(osp.basename(f)[:3]) for f in files]
    feats_a, logits_a = reference_outputs(classifier_ckpt['state'], a)
    feats_b, _ = reference_outputs(classifier_ckpt['state'], b)
    assert record['fid'] == pytest.approx(scipy_fid(feats_a, feats_b), rel=1e-6)
    is_mean, is_std = numpy_inception_score(logits_a[order], 2)
    assert record['is_mean'] == pytest.approx(is_mean, rel=1e-6)
    top = np.exp(logits_a.max(1)) / np.exp(logits_a).sum(1)
    assert record['confident_share'] == pytest.approx(100 * np.mean(top >= 0.9))
    # --quiet: no progress output
    eval_fid.main([
        str(tmp_path / 'samples'),
        str(tmp_path / 'reference'), '--feature-config', CLS_CFG, '--feature-checkpoint',
        classifier_ckpt['path'], '--quiet', '--out',
        str(tmp_path / 'quiet.json')
    ])
    assert 'Processing samples' not in capsys.readouterr().err


# ------------------------------------------------- prepare_fid_reference.py
def _pil_reference(path, size):
    """Resize the shorter side to ``size`` (PIL bilinear; the longer side
    truncated as torchvision computes it), crop the centre (offsets rounded)."""
    img = Image.open(path).convert('RGB')
    w, h = img.size
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    img = img.resize(new, Image.BILINEAR)
    left, top = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
    return np.asarray(img.crop((left, top, left + size, top + size)))


@pytest.fixture
def val_folder(tmp_path):
    """An ImageNet-style val folder: JPEG / PNG of several sizes and modes
    in class folders, and a text file that is not an image."""
    rng = np.random.default_rng(0)
    src = tmp_path / 'val'
    specs = {
        'n01/a.JPEG': ((300, 420), 'RGB'),  # portrait, shrunk
        'n01/b.png': ((64, 48), 'RGB'),  # landscape, enlarged
        'n02/c.jpg': ((64, 64), 'L'),  # grey, square
        'n02/deep/d.png': ((100, 70), 'RGBA'),
        'e.jpeg': ((64, 64), 'RGB'),  # exactly the size
    }
    for rel, ((h, w), mode) in specs.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        array = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        image = Image.fromarray(array, 'RGBA').convert(mode)
        image.save(path, format='JPEG' if rel.lower().endswith(('jpg', 'jpeg')) else 'PNG')
    (src / 'n01' / 'notes.txt').write_text('not an image')
    return src, specs


def test_prepare_fid_reference_matches_pil(tmp_path, val_folder):
    src, specs = val_folder
    tool = load_tool('dataset_converters/prepare_fid_reference.py')
    out = tmp_path / 'ref'
    result = tool.main([str(src), str(out), '--size', '64'])
    assert result['written'] == 5 and result['total'] == 5 and result['skipped'] == []
    written = sorted(osp.relpath(osp.join(r, n), out) for r, _, ns in os.walk(out) for n in ns)
    assert written == sorted(osp.splitext(rel)[0] + '.png' for rel in specs)
    for rel in specs:
        with Image.open(out / (osp.splitext(rel)[0] + '.png')) as img:
            assert img.format == 'PNG' and img.mode == 'RGB' and img.size == (64, 64)
            got = np.asarray(img)
        np.testing.assert_array_equal(got, _pil_reference(src / rel, 64), err_msg=rel)
    # a second run keeps the complete outputs and writes nothing
    stamps = {rel: os.stat(osp.join(out, rel)).st_mtime_ns for rel in written}
    again = tool.main([str(src), str(out), '--size', '64'])
    assert again['written'] == 0 and again['kept'] == 5
    assert stamps == {rel: os.stat(osp.join(out, rel)).st_mtime_ns for rel in written}
    # the default size is 256: an earlier run at 64 px is refused, not mixed in
    with pytest.raises(ValueError, match='not 256 x 256'):
        tool.main([str(src), str(out)])


def test_prepare_fid_reference_refusals(tmp_path, val_folder):
    src, _ = val_folder
    tool = load_tool('dataset_converters/prepare_fid_reference.py')
    with pytest.raises(FileNotFoundError, match='Source folder not found'):
        tool.main([str(tmp_path / 'missing'), str(tmp_path / 'out')])
    with pytest.raises(ValueError, match='must not contain each other'):
        tool.main([str(src), str(src / 'fid')])
    stray = tmp_path / 'stray'
    stray.mkdir()
    (stray / 'other.png').write_bytes(b'x')
    with pytest.raises(ValueError, match='holds other.png'):
        tool.main([str(src), str(stray)])
    # a temporary file of a killed run is removed, not refused
    leftover = tmp_path / 'resumed'
    leftover.mkdir()
    (leftover / '.e.png.123.tmp').write_bytes(b'partial')
    tool.main([str(src), str(leftover), '--size', '32'])
    assert not osp.exists(leftover / '.e.png.123.tmp') and osp.isfile(leftover / 'e.png')
    # two sources for one output
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / 'e.png')
    with pytest.raises(ValueError, match='would both be written as e.png'):
        tool.main([str(src), str(tmp_path / 'dup')])
    os.remove(src / 'e.png')
    # an unreadable image: refused with its name, or skipped and reported
    (src / 'n02' / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
    with pytest.raises(ValueError, match=r'broken\.jpg cannot be read'):
        tool.main([str(src), str(tmp_path / 'out1'), '--size', '32'])
    result = tool.main([str(src), str(tmp_path / 'out2'), '--size', '32', '--skip-unreadable'])
    assert result['total'] == 5 and result['skipped'] == [str(src / 'n02' / 'broken.jpg')]
    assert not osp.exists(tmp_path / 'out2' / 'n02' / 'broken.png')
    # the command line: one line naming the file, exit status 1
    proc = _tool_subprocess([
        osp.join(ROOT, 'tools', 'dataset_converters', 'prepare_fid_reference.py'),
        str(src),
        str(tmp_path / 'out3')
    ],
                            cwd=tmp_path)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('prepare_fid_reference.py: error: image ') and 'broken.jpg' in last
