"""The model-zoo metadata: ``model-index.yml`` and ``configs/*/metafile.yml``.

OpenMMLab's format (as mmpretrain / mmdet ship it): the index imports one
metafile per config folder; each metafile has ``Collections`` and ``Models``,
and every model names its config, its collection and its results. The checks
parse the files and ``Config.fromfile`` the configs; no model is built.
"""
import functools
import glob
import numbers
import os.path as osp

import pytest
import yaml
from mmengine.config import Config

import mmaddp  # noqa: F401  (the configs' custom_imports)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
INDEX = osp.join(ROOT, 'model-index.yml')
PAPER_URL = 'https://arxiv.org/abs/2306.05423'


def _read(path):
    with open(path, encoding='utf-8') as f:
        return yaml.safe_load(f)


def _index():
    return _read(INDEX)


def _metafiles():
    return list(_index()['Import'])


@functools.lru_cache(maxsize=None)
def _metafile(rel):
    return _read(osp.join(ROOT, rel))


def _models():
    """(metafile, model entry) for every model of every imported metafile."""
    return [(rel, model) for rel in _metafiles() for model in _metafile(rel)['Models']]


def _config_files():
    """Every config under configs/ except the _base_ fragments, found afresh."""
    found = glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    rels = (osp.relpath(path, ROOT).replace(osp.sep, '/') for path in found)
    return sorted(rel for rel in rels if not rel.startswith('configs/_base_/'))


def _config_folders():
    return sorted({osp.dirname(rel) for rel in _config_files()})


def _model_ids():
    return [model.get('Name', '?') for _, model in _models()]


def test_index_imports_existing_metafiles():
    index = _index()
    assert set(index) == {'Import'}, f'unexpected keys in model-index.yml: {sorted(index)}'
    imports = index['Import']
    assert imports and len(imports) == len(set(imports)), imports
    for rel in imports:
        assert osp.isfile(osp.join(ROOT, rel)), f'model-index.yml imports a missing file: {rel}'
        assert rel.startswith('configs/') and rel.endswith('/metafile.yml'), rel


def test_every_config_folder_has_an_imported_metafile():
    expected = [f'{folder}/metafile.yml' for folder in _config_folders()]
    missing = sorted(set(expected) - set(_metafiles()))
    assert not missing, f'config folders without a metafile in model-index.yml: {missing}'
    assert sorted(_metafiles()) == expected, 'model-index.yml imports a folder without configs'
    # and no metafile lies about that is not imported
    on_disk = glob.glob(osp.join(ROOT, 'configs', '**', 'metafile.y*ml'), recursive=True)
    on_disk = sorted(osp.relpath(path, ROOT).replace(osp.sep, '/') for path in on_disk)
    assert on_disk == expected


@pytest.mark.parametrize('rel', _metafiles())
def test_metafile_layout(rel):
    meta = _metafile(rel)
    assert set(meta) == {'Collections', 'Models'}, f'{rel}: keys {sorted(meta)}'
    assert meta['Collections'] and meta['Models'], rel
    for coll in meta['Collections']:
        assert coll.get('Name'), f'{rel}: a collection without a Name'
        metadata = coll['Metadata']
        assert isinstance(metadata['Training Data'], str) and metadata['Training Data']
        for key in ('Training Techniques', 'Architecture'):
            assert isinstance(metadata[key], list) and metadata[key], f'{rel}: {key}'
            assert all(isinstance(item, str) and item for item in metadata[key])
        assert coll['Paper']['Title'].startswith('ADDP: '), rel
        assert coll['Paper']['URL'] == PAPER_URL, rel
        assert coll['Code']['URL'].startswith('https://github.com/'), rel


def test_collection_names_are_unique():
    names = [c['Name'] for rel in _metafiles() for c in _metafile(rel)['Collections']]
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize('rel', _metafiles())
def test_models_name_a_collection_of_their_file(rel):
    meta = _metafile(rel)
    collections = {c['Name'] for c in meta['Collections']}
    used = set()
    for model in meta['Models']:
        assert model['In Collection'] in collections, (
            f'{rel}: {model["Name"]} is in {model["In Collection"]!r}, '
            f'not one of {sorted(collections)}')
        used.add(model['In Collection'])
    assert used == collections, f'{rel}: collections without models: {collections - used}'


def test_every_config_is_listed_exactly_once():
    listed = [model.get('Config') for _, model in _models()]
    configs = _config_files()
    assert configs, 'no configs found'
    missing = sorted(set(configs) - set(listed))
    assert not missing, f'configs without metadata in a metafile: {missing}'
    twice = sorted({rel for rel in listed if listed.count(rel) > 1})
    assert not twice, f'configs listed more than once: {twice}'
    assert sorted(listed) == configs, f'listed but not a config: {set(listed) - set(configs)}'


def test_model_names_are_unique_config_stems():
    names = _model_ids()
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    for rel, model in _models():
        config = model['Config']
        stem = osp.splitext(osp.basename(config))[0]
        assert model['Name'] == stem, f'{rel}: Name {model["Name"]!r} != config stem {stem!r}'
        # a model belongs to the metafile of its config's folder
        assert osp.dirname(config) == osp.dirname(rel), f'{rel}: {config}'


@pytest.mark.parametrize('rel,model', _models(), ids=_model_ids())
def test_model_entry(rel, model):
    metadata = model['Metadata']
    assert isinstance(metadata['Training Data'], str) and metadata['Training Data']
    for key in ('Epochs', 'Iterations', 'Batch Size'):
        value = metadata.get(key, 1)
        assert isinstance(value, int) and not isinstance(value, bool) and value > 0, (key, value)
    demo = 'demo' in model['Name']
    # demo checkpoints are made by `make demo`; none is downloadable
    weights = model.get('Weights')
    assert weights is None or (not demo and weights.startswith('https://')), model['Name']
    if demo:
        assert 'bundled' in metadata['Training Data'], model['Name']
    results = model.get('Results')
    if results is None:  # nothing measured or published for this config
        assert 'Measured' not in metadata, model['Name']
        return
    # demo numbers are this repository's measurements, the others the paper's
    assert ('Measured' in metadata) == demo, model['Name']
    if demo:
        assert 'CPU' in metadata['Measured'], model['Name']
    assert isinstance(results, list) and results, f'{model["Name"]}: empty Results'
    for result in results:
        assert set(result) == {'Task', 'Dataset', 'Metrics'}, sorted(result)
        assert isinstance(result['Task'], str) and result['Task']
        assert isinstance(result['Dataset'], str) and result['Dataset']
        assert ('bundled' in result['Dataset']) == demo, (model['Name'], result['Dataset'])
        metrics = result['Metrics']
        assert isinstance(metrics, dict) and metrics, f'{model["Name"]}: empty Metrics'
        for key, value in metrics.items():
            assert isinstance(value, numbers.Real) and not isinstance(value, bool), (key, value)


def test_downstream_names_exist():
    names = set(_model_ids())
    for _, model in _models():
        for name in model.get('Downstream', []):
            assert name in names, f'{model["Name"]}: unknown downstream model {name}'


@functools.lru_cache(maxsize=None)
def _loaded(config):
    return Config.fromfile(osp.join(ROOT, config))


@pytest.mark.parametrize('rel,model', _models(), ids=_model_ids())
def test_config_loads(rel, model):
    path = osp.join(ROOT, model['Config'])
    assert osp.isfile(path), f'{rel}: missing config {model["Config"]}'
    cfg = _loaded(model['Config'])
    assert 'model' in cfg and cfg.model.get('type'), model['Config']


# (model, metric, value): ../shared/ADDP_SPEC.md
PUBLISHED = sorted([
    ('addp_vit-base-p16_64xb64-amp-1600e_in1k', 'FID', 8.9),
    ('addp_vit-base-p16_64xb64-amp-1600e_in1k', 'IS', 95.3),
    ('addp_vit-large-p16_64xb64-amp-800e_in1k', 'FID', 7.6),
    ('addp_vit-large-p16_64xb64-amp-800e_in1k', 'IS', 105.1),
    ('addp-vit-base-p16_8xb128-amp-coslr-100e_in1k-256px', 'Top 1 Accuracy', 83.9),
    ('addp-vit-large-p16_8xb128-amp-coslr-50e_in1k-256px', 'Top 1 Accuracy', 85.9),
    ('mask-rcnn_addp-vit-base-p16_simple-fpn_lsj-1024_100e_coco', 'box AP', 51.7),
    ('mask-rcnn_addp-vit-large-p16_simple-fpn_lsj-1024_100e_coco', 'box AP', 54.6),
    ('upernet_addp-vit-base-p16_8xb2-160k_ade20k-512x512', 'mIoU', 48.1),
    ('upernet_addp-vit-large-p16_8xb2-160k_ade20k-512x512', 'mIoU', 54.3),
])


def test_published_numbers():
    """The paper configs carry the numbers of ../shared/ADDP_SPEC.md, and only those."""
    seen = []
    for _, model in _models():
        if 'demo' not in model['Name']:
            for result in model.get('Results') or []:
                seen += [(model['Name'], k, v) for k, v in result['Metrics'].items()]
    assert sorted(seen) == PUBLISHED


def _demo_section():
    with open(osp.join(ROOT, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    start = text.index('### What the demo measured')
    end = text.index('\n#', start + 1)
    return text[start:end]


def test_demo_numbers_are_the_readme_measurements():
    """Each demo metric is a number of README.md's "What the demo measured"."""
    section = _demo_section()
    for _, model in _models():
        if 'demo' not in model['Name']:
            continue
        for result in model.get('Results') or []:
            for key, value in result['Metrics'].items():
                spelled = {repr(value), f'{value:g}', f'{value:.2f}'}
                assert any(s in section for s in spelled), (
                    f'{model["Name"]}: {key} {value} is not in the README demo table')
