"""Code ids of augmented training views, computed once for token-input runs
(mmaddp.datasets.code_id_cache), and the classifier reading them."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import default_collate
from mmengine.registry import init_default_scope

from mmaddp.datasets import CodeIdDataset
from mmaddp.models.tokenizers import VQTokenizer
from mmaddp.registry import DATASETS, MODELS
from conftest import load_tool

encode_training_views = load_tool('dataset_converters/cache_code_ids.py').encode_training_views

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# the few-label recipe: the demo's classification config with batch augments
CLS_CFG = osp.join(ROOT, 'configs', 'imagenet',
                   'addp-vit-nano-p4_1xb64-1000i_demo-100-per-class.py')
TOKENIZER = dict(
    type='VQTokenizer',
    base_channels=8,
    channel_mults=(1, 2, 2, 2),
    num_res_blocks=1,
    code_dim=8,
    num_codes=16,
    norm_groups=4)


@pytest.fixture
def token_cfg(tmp_path, tiny_cls_root):
    """The tiny classification config reading the ids of a random tokenizer,
    on a two-class folder of 16 training images, 10 iterations of 4."""
    torch.manual_seed(0)
    tok = VQTokenizer(**{k: v for k, v in TOKENIZER.items() if k != 'type'})
    path = str(tmp_path / 'tokenizer.pth')
    torch.save(dict(state_dict=tok.state_dict()), path)
    cfg = Config.fromfile(CLS_CFG)
    cfg.model.backbone.patch_size = 8  # this tokenizer downsamples 8x
    cfg.model.backbone.token_input = dict(tokenizer=dict(TOKENIZER, checkpoint=path))
    cfg.merge_from_dict({
        'model.backbone.init_cfg': None,
        'model.head.num_classes': 2,
        'data_preprocessor.num_classes': 2,
        'train_dataloader.batch_size': 4,
        'train_dataloader.dataset.data_root': tiny_cls_root,
        'train_cfg.max_iters': 10
    })
    init_default_scope('mmpretrain')
    return cfg


def build_classifier(cfg):
    model_cfg = cfg.model.copy()
    model_cfg.data_preprocessor = dict(cfg.data_preprocessor, type='CodeIdDataPreprocessor')
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def test_views_are_the_run_s_augmented_images_encoded(token_cfg, tmp_path):
    out = str(tmp_path / 'ids.npz')
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    info = encode_training_views(token_cfg, out, seed=5, log=lambda _: None)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's stream is untouched
    # default views: passes of the schedule over the data, ceil(10 * 4 / 16)
    assert info == dict(file=out, views=3, images=16, grid=[4, 4])
    with np.load(out) as f:
        ids, labels, num_codes = f['ids'], f['labels'], int(f['num_codes'])
    assert ids.shape == (3, 16, 4, 4) and ids.dtype == np.uint8 and num_codes == 16
    assert sorted(labels.tolist()) == [0] * 8 + [1] * 8
    assert not osp.exists(out + '.tmp.npz')

    # reference: the run's data preprocessor (normalise + BatchRandomAffine)
    # and the backbone's tokenizer on the whole set, seeded as the builder is
    model = build_classifier(token_cfg).train()
    dataset = DATASETS.build(token_cfg.train_dataloader.dataset)
    items = [dataset[i] for i in range(16)]
    assert [int(item['data_samples'].gt_label) for item in items] == labels.tolist()
    torch.manual_seed(5)
    with torch.no_grad():
        refs = []
        for _ in range(3):
            data = dict(
                inputs=torch.stack([item['inputs'] for item in items]),
                data_samples=[item['data_samples'] for item in items])
            pixels = model.data_preprocessor(data, training=True)['inputs']
            refs.append(model.backbone.patch_embed.code_ids(pixels).numpy())
    np.testing.assert_array_equal(ids, np.stack(refs))
    # each view is its own augmentation draw
    assert (ids[0] != ids[1]).any() and (ids[1] != ids[2]).any()


def test_one_view_without_batch_augments(token_cfg, tmp_path):
    """Without batch augments every pass would read the same ids: one view,
    the ids of the normalised images themselves."""
    token_cfg.data_preprocessor.batch_augments = None
    out = str(tmp_path / 'ids.npz')
    assert encode_training_views(token_cfg, out, log=lambda _: None)['views'] == 1
    model = build_classifier(token_cfg).eval()
    dataset = DATASETS.build(token_cfg.train_dataloader.dataset)
    items = [dataset[i] for i in range(16)]
    data = dict(
        inputs=torch.stack([item['inputs'] for item in items]),
        data_samples=[item['data_samples'] for item in items])
    with torch.no_grad():
        ref = model.backbone.patch_embed.code_ids(model.data_preprocessor(data)['inputs']).numpy()
    with np.load(out) as f:
        np.testing.assert_array_equal(f['ids'], ref[None])


def test_classifier_reads_cached_ids_as_it_reads_their_images(token_cfg, tmp_path):
    out = str(tmp_path / 'ids.npz')
    encode_training_views(token_cfg, out, views=2, log=lambda _: None)
    dataset = CodeIdDataset(out, num_codes=16, pipeline=[dict(type='PackInputs')])
    assert len(dataset) == 32
    with np.load(out) as f:
        ids, labels = f['ids'], f['labels']
    item = dataset[16 + 3]  # view 1 of image 3
    assert item['inputs'].dtype == torch.int64
    np.testing.assert_array_equal(item['inputs'][0].numpy(), ids[1, 3])
    assert int(item['data_samples'].gt_label) == labels[3]

    model = build_classifier(token_cfg).eval()
    batch = default_collate([dataset[i] for i in range(4)])
    data = model.data_preprocessor(batch, training=True)
    assert data['inputs'].shape == (4, 4, 4) and data['inputs'].dtype == torch.int64
    assert [int(s.gt_label) for s in data['data_samples']] == labels[:4].tolist()
    # the same ids reached through their pixels: identical features
    images = DATASETS.build(token_cfg.train_dataloader.dataset)
    pixels = model.data_preprocessor(
        default_collate([images[i] for i in range(4)]), training=False)['inputs']
    with torch.no_grad():
        through_pixels = model.backbone.patch_embed.code_ids(pixels)
        feats_ids = model.extract_feat(through_pixels)
        feats_pixels = model.extract_feat(pixels)
    torch.testing.assert_close(feats_ids, feats_pixels)
    # and training on cached ids back-propagates into the id embedding
    model.train()
    losses = model(**data, mode='loss')
    losses['loss'].backward()
    assert torch.isfinite(losses['loss'])
    assert model.backbone.patch_embed.embedding.weight.grad.abs().sum() > 0


def test_bad_caches_and_inputs_are_refused(token_cfg, tmp_path):
    out = str(tmp_path / 'ids.npz')
    with pytest.raises(FileNotFoundError, match='no code-id cache at .*missing.npz'):
        len(CodeIdDataset(str(tmp_path / 'missing.npz')))
    bad = tmp_path / 'bad.npz'
    bad.write_bytes(b'not an npz')
    with pytest.raises(ValueError, match='bad.npz is not a code-id cache'):
        len(CodeIdDataset(str(bad)))
    encode_training_views(token_cfg, out, views=1, log=lambda _: None)
    with pytest.raises(ValueError, match='16-code tokenizer; the model reads 1024'):
        len(CodeIdDataset(out, num_codes=1024))
    with pytest.raises(ValueError, match='views must be >= 1'):
        encode_training_views(token_cfg, str(tmp_path / 'none.npz'), views=0)
    pixel_cfg = token_cfg.copy()
    pixel_cfg.model.backbone.token_input = None
    with pytest.raises(ValueError, match='token_input'):
        encode_training_views(pixel_cfg, str(tmp_path / 'pixels.npz'))
    # a pixel-reading ADDPViT is given code ids
    pixel_cfg.model.backbone.init_cfg = None
    model = MODELS.build(pixel_cfg.model)
    with pytest.raises(ValueError, match='got code ids .* reads pixels'):
        model.extract_feat(torch.zeros(2, 4, 4, dtype=torch.int64))


def test_progress_bar_counts_the_batches(token_cfg, tmp_path, capsys):
    """The command line draws mmengine's progress bar (stderr), one step per
    encoded batch, and the same ids come out as without it."""
    quiet, shown = str(tmp_path / 'quiet.npz'), str(tmp_path / 'shown.npz')
    lines = []
    encode_training_views(token_cfg, quiet, views=2, batch_size=6, log=lines.append)
    assert len(lines) == 2 and capsys.readouterr().err == ''  # one line per view
    lines.clear()
    encode_training_views(
        token_cfg, shown, views=2, batch_size=6, log=lines.append, show_progress=True)
    err = capsys.readouterr().err
    assert not lines and '6/6' in err  # 2 views x ceil(16 / 6) batches
    with np.load(quiet) as a, np.load(shown) as b:
        np.testing.assert_array_equal(a['ids'], b['ids'])
