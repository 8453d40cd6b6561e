"""Data transforms mmaddp adds to mmpretrain's pipeline."""
from typing import Optional

from mmcv.transforms import LoadImageFromFile

from mmaddp.registry import TRANSFORMS, register_transform


@TRANSFORMS.register_module()
class CachedLoadImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` that decodes each file once per process and then
    hands out copies of the decoded array.

    For small images read many times by one process (the demo's 32 px digits,
    ~17 passes over 30,000 files): reading and decoding a file costs ~170 us,
    more than the rest of the per-sample pipeline, and with loader workers the
    batches also pay for the trip between processes. mmengine's file backends
    cache bytes at best, not decoded images, hence this class.

    The cache lives in the process that runs the pipeline (each loader worker
    has its own; with ``num_workers=0`` the training process). Once it holds
    ``max_cache_mb`` of pixels, further files are decoded every time they are
    read. A file that fails to load is never cached: it fails (or is skipped
    with ``ignore_empty``) each time, as with ``LoadImageFromFile``.

    Args:
        max_cache_mb (float): the most decoded pixels to keep, in MiB.
        **kwargs: ``LoadImageFromFile``'s arguments.
    """

    def __init__(self, max_cache_mb: float = 1024., **kwargs):
        super().__init__(**kwargs)
        self.max_cache_bytes = int(max_cache_mb * 2**20)
        self.cached_bytes = 0
        self.cache = {}

    def transform(self, results: dict) -> Optional[dict]:
        img = self.cache.get(results['img_path'])
        if img is None:
            results = super().transform(results)
            if results is None:  # ignore_empty and the file did not load
                return None
            img = results['img']
            if self.cached_bytes + img.nbytes <= self.max_cache_bytes:
                self.cache[results['img_path']] = img.copy()
                self.cached_bytes += img.nbytes
            return results
        # a copy: later transforms may change the array in place
        img = img.copy()
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f', max_cache_mb={self.max_cache_bytes / 2**20:g})'


@register_transform()
class CheckedLoadImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` that names an unreadable image, or skips it.

    mmcv's transform fails on a corrupt or truncated file with a bare
    ``assert`` (or the decoder's own error), deep in a loader worker. Here the
    failure is a ``ValueError`` that names the file; with ``skip_bad=True``
    the transform returns ``None`` instead, so MMEngine's ``BaseDataset``
    draws another sample, and logs each skipped file with the running count
    of the process (each loader worker counts its own).

    Args:
        skip_bad (bool): skip unreadable files instead of stopping.
            Defaults to False.
        **kwargs: ``LoadImageFromFile``'s arguments.
    """

    def __init__(self, skip_bad: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.skip_bad = skip_bad
        self.skipped = 0

    def transform(self, results: dict) -> Optional[dict]:
        path = results.get('img_path')
        try:
            out = super().transform(results)
        except Exception as err:  # the decoders raise many types on bad bytes
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            if not self.skip_bad:
                raise ValueError(f'image {path} cannot be read (corrupt or truncated?): '
                                 f'{reason}') from err
            self.skipped += 1
            from mmengine.logging import MMLogger
            MMLogger.get_current_instance().warning(
                f'skipped unreadable image {path} ({reason}); {self.skipped} skipped so far in '
                'this process')
            return None
        return out
