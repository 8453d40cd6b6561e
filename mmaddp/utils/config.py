"""Config overrides that refuse keys the config does not have."""
from mmengine.config import Config


def _has_key(node, parts):
    for part in parts:
        if isinstance(node, (list, tuple)):
            if not part.isdigit() or int(part) >= len(node):
                return False
            node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node:
                return False
            node = node[part]
        else:
            return False
    return True


def merge_cfg_options_strict(cfg: Config, options: dict) -> None:
    """``cfg.merge_from_dict(options)`` after checking every key exists.

    A misspelt ``--cfg-options`` key would otherwise add an unused setting
    silently; here it raises ``KeyError`` naming the key.
    """
    unknown = [key for key in options if not _has_key(cfg._cfg_dict, key.split('.'))]
    if unknown:
        raise KeyError(f'--cfg-options keys not found in the config: {unknown}. '
                       'Check the spelling, or add the key to the config file first.')
    cfg.merge_from_dict(options)


def check_image_loading(cfg: Config) -> int:
    """Read every data loader's images through ``CheckedLoadImageFromFile``.

    The configs' test pipelines name mmcv's ``LoadImageFromFile``: it is the
    transform OpenMMLab's inferencers (``ImageClassificationInferencer``,
    ``DetInferencer``, ``MMSegInferencer``) look for and replace with their
    own loader, and they refuse a pipeline without it. Run by the tools, the
    same transform would fail on a corrupt file with mmcv's bare ``assert``;
    here it becomes ``CheckedLoadImageFromFile`` (same arguments), which
    names the file. Returns how many transforms were replaced.
    """

    def visit(node) -> int:
        count = 0
        if isinstance(node, dict):
            if node.get('type') == 'LoadImageFromFile':
                node['type'] = 'CheckedLoadImageFromFile'
                count += 1
            for value in node.values():
                count += visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                count += visit(value)
        return count

    return sum(
        visit(cfg.get(key)) for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'))


def load_tool_config(args) -> Config:
    """The config of ``tools/train.py`` / ``tools/test.py``: read
    ``args.config``, apply ``--cfg-options`` strictly, check image loading
    (:func:`check_image_loading`), set the launcher and
    the work dir (``--work-dir``, else ``./work_dirs/CONFIG_NAME``)."""
    import os.path as osp
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'Config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        merge_cfg_options_strict(cfg, args.cfg_options)
    check_image_loading(cfg)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg
