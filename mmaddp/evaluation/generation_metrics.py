"""FID and Inception Score of generated images, all through torch-fidelity.

:func:`torch_fidelity.calculate_metrics` computes FID and IS for both kinds of
feature network, so the Fréchet distance and the Inception Score have one
implementation (torch-fidelity's) whatever the network:

* ``inception``: torch-fidelity's ``inception-v3-compat`` (the TF-Inception
  port that the published FID / IS numbers use), read from a local weights
  file. Nothing is ever downloaded: a missing file is an error that says where
  to put it.
* ``classifier``: an mmpretrain classifier built from a config (+ checkpoint),
  for instance the tiny classifier trained on the bundled classification set.
  It is registered with torch-fidelity as the feature extractor
  ``'mmaddp-classifier'`` (:class:`ClassifierFeatureExtractor`): its pooled
  backbone / neck features give the FID, its logits the IS. The same forward
  passes also give :func:`confident_share` (the share of samples it assigns a
  class with p >= 0.9), which torch-fidelity does not compute. Numbers are
  comparable only between runs that use the same network.

Images enter as a folder (searched recursively for PNG / JPEG files), a uint8
tensor N x 3 x H x W (RGB), or a list of uint8 tensors 3 x H x W.
"""
import os
import os.path as osp
import shutil
import tempfile
import weakref
from abc import ABC, abstractmethod
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
ImageSource = Union[str, torch.Tensor, Sequence[torch.Tensor]]
#: name of :class:`ClassifierFeatureExtractor` in torch-fidelity's registry
CLASSIFIER_EXTRACTOR = 'mmaddp-classifier'
#: where the tools look for torch-fidelity's Inception weights by default
DEFAULT_INCEPTION_WEIGHTS = osp.join('pretrain', 'weights-inception-2015-12-05-6726825d.pth')


# ------------------------------------------------------------------ metrics
def confident_share(probs, threshold: float = 0.9) -> float:
    """Percentage of samples whose most likely class has probability at
    least ``threshold``: those the classifier assigns a class with
    confidence (the share of recognisable samples).

    Args:
        probs (array-like): N x C class probabilities, or the N largest
            probabilities (one per sample) when only those were kept.
        threshold (float): the confidence bar. Default: 0.9.

    Returns:
        float: the share in percent, in [0, 100].
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim not in (1, 2) or p.shape[0] < 1 or p.size < 1:
        raise ValueError(f'need N x C probabilities or N top probabilities, got {p.shape}')
    top = p.max(1) if p.ndim == 2 else p
    return float(100.0 * (top >= threshold).mean())


# ------------------------------------------------------------------- images
def list_image_files(folder: str, exclude: Sequence[str] = ()) -> List[str]:
    """PNG / JPEG files under ``folder`` (recursive, sorted), leaving out the
    file names in ``exclude`` (e.g. ``grid.png`` of ``tools/generate.py``)."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f'Image folder not found: {folder}')
    files = []
    for root, _, names in os.walk(folder):
        files += [
            osp.join(root, n) for n in names
            if n.lower().endswith(IMAGE_EXTENSIONS) and n not in exclude
        ]
    if not files:
        raise ValueError(f'No PNG or JPEG images in {folder}')
    return sorted(files)


class UInt8Images(Dataset):
    """Images as uint8 RGB tensors 3 x H x W (what torch-fidelity expects)
    from a folder, a uint8 tensor N x 3 x H x W or a list of 3 x H x W ones."""

    def __init__(self, source: ImageSource, exclude: Sequence[str] = ()):
        if isinstance(source, (str, os.PathLike)):
            self.files, self.images = list_image_files(str(source), exclude), None
        else:
            images = list(source)
            if not images:
                raise ValueError('No images given')
            for image in images:
                if not (torch.is_tensor(image) and image.dtype == torch.uint8 and image.dim() == 3
                        and image.shape[0] == 3):
                    raise ValueError('image tensors must be uint8 RGB 3 x H x W, got '
                                     f'{getattr(image, "dtype", type(image))} '
                                     f'{tuple(getattr(image, "shape", ()))}')
            self.files, self.images = None, images

    def __len__(self):
        return len(self.files) if self.images is None else len(self.images)

    def __getitem__(self, index):
        if self.images is not None:
            return self.images[index].cpu()
        from PIL import Image
        try:
            with Image.open(self.files[index]) as img:
                array = np.array(img.convert('RGB'))
        except (OSError, SyntaxError, ValueError) as err:  # PIL's errors on bad bytes
            raise ValueError(f'image {self.files[index]} cannot be read (corrupt or '
                             f'truncated?): {err}') from err
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()


# ------------------------------------------- the classifier in torch-fidelity
def classifier_outputs(
        model: torch.nn.Module,
        images: torch.Tensor,
        input_size: Optional[Tuple[int, int]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pooled features and logits of an mmpretrain classifier.

    Args:
        model (nn.Module): a classifier with ``data_preprocessor``,
            ``extract_feat`` and ``head`` (mmpretrain ``ImageClassifier``).
        images (Tensor): uint8 RGB images B x 3 x H x W.
        input_size (tuple[int, int], optional): resize (bilinear, in float)
            to this H x W first. Default: None (the images' own size).

    Returns:
        tuple[Tensor, Tensor]: float64 pooled features B x D (the last
        feature map averaged over space, or the tokens averaged) and float64
        logits B x C, on the model's device.
    """
    device = next(model.parameters()).device
    x = images.to(device).float()
    if input_size is not None and tuple(x.shape[-2:]) != tuple(input_size):
        x = F.interpolate(x, size=tuple(input_size), mode='bilinear', align_corners=False)
    preprocessor = model.data_preprocessor
    if getattr(preprocessor, 'to_rgb', False) or getattr(preprocessor, '_channel_conversion',
                                                         False):
        x = x.flip(1)  # it expects BGR (as loaded by cv2) and converts to RGB
    x = preprocessor(dict(inputs=x), False)['inputs']
    feats = model.extract_feat(x)
    logits = model.head(feats)
    if isinstance(logits, (tuple, list)):
        logits = logits[-1]
    pooled = feats[-1] if isinstance(feats, (tuple, list)) else feats
    if isinstance(pooled, (tuple, list)):
        pooled = pooled[-1]
    if pooled.dim() == 4:  # B x C x H x W maps
        pooled = pooled.mean((2, 3))
    elif pooled.dim() == 3:  # B x N x C tokens
        pooled = pooled.mean(1)
    return pooled.double(), logits.double()


class ClassifierFeatureExtractor(FeatureExtractorBase):
    """An mmpretrain classifier as torch-fidelity feature extractor,
    registered as ``'mmaddp-classifier'`` when this module is imported.

    It provides ``'pooled'`` (float64 B x D pooled features; the default
    layer of FID, KID and PRC) and ``'logits_unbiased'`` (float64 B x C
    logits, which torch-fidelity's IS turns into probabilities; the default
    layer of IS), from uint8 RGB batches B x 3 x H x W::

        import mmaddp.evaluation.generation_metrics  # registers the extractor
        torch_fidelity.calculate_metrics(
            input1=samples, input2=reference, fid=True, isc=True,
            feature_extractor='mmaddp-classifier',
            feature_extractor_weights_path='work_dirs/cls/iter_3000.pth',
            classifier_config='configs/imagenet/addp-vit-nano-p4_1xb64-6000i_demo.py')

    torch-fidelity constructs extractors itself, as
    ``cls(name, features_list, **kwargs)`` with every keyword argument given
    to ``calculate_metrics``, and ignores the keywords it does not know. So
    the checkpoint travels in torch-fidelity's own
    ``feature_extractor_weights_path`` and the rest in the ``classifier_*``
    keywords below; ``classifier_model`` hands over a classifier built once
    (:class:`ClassifierFeatureNet` does, so that repeated evaluations use the
    same weights without reading the checkpoint again). torch-fidelity then
    sets the extractor, and with it that classifier, to eval mode without
    gradients (and moves it to the GPU with ``cuda=True``).

    Args:
        name (str): the registered name.
        features_list (list[str]): the features torch-fidelity asks for.
        feature_extractor_weights_path (str, optional): the classifier's
            checkpoint (runner checkpoint or bare state dict), read with
            ``classifier_config``. Default: None (keep the initialisation;
            only useful for tests).
        classifier_config (str | Config | dict, optional): its mmpretrain
            config. Needed unless ``classifier_model`` is given.
        classifier_model (nn.Module, optional): a built classifier instead of
            config + checkpoint.
        classifier_input_size (tuple[int, int], optional): resize batches to
            this H x W before the network (bilinear). Default: None.
        classifier_confidences (list, optional): when given, every forward
            appends the largest class probability of each image (float64
            tensor B, CPU) in the order the images come, so the caller gets
            :func:`confident_share` from the same passes (torch-fidelity
            returns metrics only, never the features).
        **kwargs: the other ``calculate_metrics`` arguments (unused).
    """

    def __init__(self,
                 name: str,
                 features_list: Sequence[str],
                 feature_extractor_weights_path: Optional[str] = None,
                 classifier_config=None,
                 classifier_model: Optional[torch.nn.Module] = None,
                 classifier_input_size: Optional[Tuple[int, int]] = None,
                 classifier_confidences: Optional[list] = None,
                 **kwargs):
        super().__init__(name, features_list)
        if classifier_model is None:
            if classifier_config is None:
                raise ValueError(f"the '{name}' feature extractor needs classifier_config="
                                 '<mmpretrain config> (and feature_extractor_weights_path='
                                 '<checkpoint>) or classifier_model=<built classifier>')
            classifier_model = build_classifier(classifier_config, feature_extractor_weights_path)
        elif classifier_config is not None or feature_extractor_weights_path is not None:
            raise ValueError(f"the '{name}' feature extractor takes either classifier_model or "
                             'classifier_config + feature_extractor_weights_path, not both')
        self.model = classifier_model
        self.input_size = tuple(classifier_input_size) if classifier_input_size else None
        self.confidences = classifier_confidences

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """uint8 RGB images B x 3 x H x W -> the requested features, in the
        order of ``features_list``."""
        if not (torch.is_tensor(images) and images.dtype == torch.uint8 and images.dim() == 4
                and images.shape[1] == 3):
            raise ValueError('the classifier feature extractor takes uint8 RGB B x 3 x H x W, got '
                             f'{getattr(images, "dtype", type(images))} '
                             f'{tuple(getattr(images, "shape", ()))}')
        pooled, logits = classifier_outputs(self.model, images, self.input_size)
        if self.confidences is not None:
            self.confidences.append(logits.softmax(-1).amax(-1).cpu())
        out = dict(pooled=pooled, logits_unbiased=logits)
        return tuple(out[name] for name in self.features_list)

    @staticmethod
    def get_provided_features_list():
        return ('pooled', 'logits_unbiased')

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return dict(isc='logits_unbiased', fid='pooled', kid='pooled', prc='pooled')[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)


if CLASSIFIER_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:  # once per process
    torch_fidelity.register_feature_extractor(CLASSIFIER_EXTRACTOR, ClassifierFeatureExtractor)


# ------------------------------------------------------------ feature nets
class PreparedReference:
    """Reference images whose features torch-fidelity has already computed
    and cached (in a temporary folder removed with this object), made by
    :meth:`GenerationFeatureNet.prepare_reference` of one feature net and
    usable only with that net."""

    def __init__(self, images: Dataset, owner: 'GenerationFeatureNet'):
        self.images = images
        self.owner = weakref.ref(owner)
        self.cache_root = tempfile.mkdtemp(prefix='mmaddp-fid-reference-')
        self.cache_name = 'reference'
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.cache_root, True)

    def __len__(self):
        return len(self.images)


class GenerationFeatureNet(ABC):
    """Computes ``dict(fid=..., is_mean=..., is_std=...)`` of generated
    samples against reference images with
    :func:`torch_fidelity.calculate_metrics`; subclasses name the feature
    extractor and its arguments.

    Args:
        batch_size (int): images per forward. Default: 64.
        splits (int): IS splits (fewer when there are fewer samples). Split
            boundaries are torch-fidelity's, ``i * N // splits`` after its
            fixed shuffle of the samples (seed 2020), so a folder sorted by
            class (the val split) does not put one class in each split and
            score IS ~1. Default: 10.
        cuda (bool, optional): run on the GPU. Default: when one is available.
        exclude (list[str]): file names left out of sample folders.
            Default: none.
        verbose (bool): let torch-fidelity report its steps and show its
            progress bar over the images (tqdm, on stderr). Default: False.
        **fidelity_kwargs: more ``calculate_metrics`` options, e.g.
            ``save_cpu_ram=True`` (no loader worker processes).
    """

    def __init__(self,
                 batch_size: int = 64,
                 splits: int = 10,
                 cuda: Optional[bool] = None,
                 exclude: Sequence[str] = (),
                 verbose: bool = False,
                 **fidelity_kwargs):
        if batch_size < 1 or splits < 1:
            raise ValueError(f'need batch_size >= 1 and splits >= 1, got {batch_size} and '
                             f'{splits}')
        self.batch_size = batch_size
        self.splits = splits
        self.cuda = torch.cuda.is_available() if cuda is None else bool(cuda)
        self.exclude = tuple(exclude)
        self.verbose = verbose
        self.fidelity_kwargs = fidelity_kwargs

    @abstractmethod
    def extractor_kwargs(self) -> dict:
        """``calculate_metrics`` arguments that choose the feature extractor
        (``feature_extractor``, ``feature_extractor_weights_path``, ...)."""

    def _images(self, source, exclude: Sequence[str] = ()) -> Dataset:
        return source if isinstance(source, Dataset) else UInt8Images(source, exclude)

    def _calculate(self, input1: Dataset, input2: Dataset, **kwargs) -> dict:
        args = dict(
            input1=input1,
            input2=input2,
            fid=True,
            isc=True,
            isc_splits=max(1, min(self.splits, len(input1))),
            batch_size=self.batch_size,
            cuda=self.cuda,
            cache=False,
            verbose=self.verbose,
            samples_shuffle=True,  # torch-fidelity's default: seeded, before the IS splits
            datasets_download=False)
        args.update(self.fidelity_kwargs)
        args.update(self.extractor_kwargs())
        args.update(kwargs)
        try:
            return torch_fidelity.calculate_metrics(**args)
        except RuntimeError as err:
            if 'stack expects each tensor to be equal size' in str(err):
                raise ValueError(
                    'images of different sizes in one batch: FID needs images of one size '
                    '(tools/dataset_converters/prepare_fid_reference.py writes a reference '
                    'folder at one size)') from err
            raise

    def prepare_reference(self, reference: ImageSource) -> PreparedReference:
        """Compute the reference features once (torch-fidelity's file cache,
        in a temporary folder), for :class:`GenerationEvalHook`, which scores
        many sample sets against one reference.

        Args:
            reference (str | Tensor | list[Tensor] | PreparedReference): a
                folder, uint8 images N x 3 x H x W, or an already prepared
                reference of this net (returned as it is).

        Returns:
            PreparedReference: to pass as ``reference`` to
            :meth:`compute_metrics` of this net.
        """
        if isinstance(reference, PreparedReference):
            self._check_owner(reference)
            return reference
        prepared = PreparedReference(self._images(reference), self)
        # FID of the reference against itself (0): one pass over the images
        # fills the cache with every feature that compute_metrics asks for
        self._calculate(prepared.images, prepared.images,
                        **dict(self._cache_kwargs(prepared, 1), **self._cache_kwargs(prepared, 2)))
        return prepared

    def _check_owner(self, prepared: PreparedReference):
        if prepared.owner() is not self:
            raise ValueError('this reference was prepared by another feature net; prepare it '
                             'with the net that scores the samples')

    @staticmethod
    def _cache_kwargs(prepared: PreparedReference, slot: int) -> dict:
        return {
            'cache': True,
            'cache_root': prepared.cache_root,
            f'input{slot}_cache_name': prepared.cache_name
        }

    def compute_metrics(self, samples: ImageSource, reference, **kwargs) -> Dict[str, float]:
        """FID / IS of ``samples`` against ``reference``.

        Args:
            samples (str | Tensor | list[Tensor]): the generated images.
            reference (str | Tensor | list[Tensor] | PreparedReference): the
                reference images, or their features prepared by
                :meth:`prepare_reference` of this net.
            **kwargs: more ``calculate_metrics`` arguments for this call.

        Returns:
            dict: ``fid`` (clamped at 0: torch-fidelity's value of two equal
            sets can dip below 0 by rounding), ``is_mean`` and ``is_std``.
        """
        samples = self._images(samples, self.exclude)
        if isinstance(reference, PreparedReference):
            self._check_owner(reference)
            kwargs = dict(self._cache_kwargs(reference, 2), **kwargs)
            reference = reference.images
        else:
            reference = self._images(reference)
        out = self._calculate(samples, reference, **kwargs)
        return dict(
            fid=max(float(out['frechet_inception_distance']), 0.0),
            is_mean=float(out['inception_score_mean']),
            is_std=float(out['inception_score_std']))


class InceptionFeatureNet(GenerationFeatureNet):
    """torch-fidelity's ``inception-v3-compat`` from a local weights file.

    Args:
        weights_path (str): the ``weights-inception-2015-12-05-6726825d.pth``
            file that torch-fidelity would fetch from its release page; a
            missing file raises ``FileNotFoundError`` (nothing is downloaded).
        batch_size (int): images per Inception forward. Default: 64.
        isc_splits (int): IS splits (torch-fidelity's default 10; fewer when
            there are fewer samples). Default: 10.
        cuda (bool, optional): run on the GPU. Default: when one is available.
        exclude (list[str]): file names left out of sample folders.
        verbose (bool): torch-fidelity's messages and progress bar.
            Default: False.
        **fidelity_kwargs: more ``calculate_metrics`` options, e.g.
            ``save_cpu_ram=True`` (no loader worker processes).
    """

    def __init__(self,
                 weights_path: Optional[str],
                 batch_size: int = 64,
                 isc_splits: int = 10,
                 cuda: Optional[bool] = None,
                 exclude: Sequence[str] = (),
                 verbose: bool = False,
                 **fidelity_kwargs):
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
        if not weights_path or not osp.isfile(weights_path):
            where = (f'at {weights_path!r}' if weights_path else
                     f'(no path given; the tools look at {DEFAULT_INCEPTION_WEIGHTS!r})')
            raise FileNotFoundError(
                f'Inception weights not found {where}. FID/IS with the '
                "'inception-v3-compat' network need the file torch-fidelity downloads from "
                f'{URL_INCEPTION_V3} ({osp.basename(URL_INCEPTION_V3)}); nothing is downloaded '
                'here. Fetch it on a machine with internet access, copy it to that path (or '
                'point weights_path / --weights at it), or use a classifier feature net '
                'instead.')
        super().__init__(batch_size, isc_splits, cuda, exclude, verbose, **fidelity_kwargs)
        self.weights_path = weights_path

    def extractor_kwargs(self) -> dict:
        return dict(
            feature_extractor='inception-v3-compat',
            feature_extractor_weights_path=self.weights_path)

    def _calculate(self, input1, input2, **kwargs) -> dict:
        try:
            return super()._calculate(input1, input2, **kwargs)
        except RuntimeError as err:
            if 'state_dict' in str(err):
                raise ValueError(f'{self.weights_path} is not the inception-v3-compat weights '
                                 f'file of torch-fidelity: {str(err).splitlines()[0]}') from err
            raise


class ClassifierFeatureNet(GenerationFeatureNet):
    """An mmpretrain classifier as feature net, through torch-fidelity's
    registered ``'mmaddp-classifier'`` extractor
    (:class:`ClassifierFeatureExtractor`); :meth:`compute_metrics` adds
    ``confident_share`` (percent of samples with top class probability
    >= 0.9) from the same forward passes.

    Args:
        config (str | Config | dict): its config (file, object or dict).
        checkpoint (str, optional): its weights (a runner checkpoint or a bare
            state dict). Default: None (the network keeps its
            initialisation, which is only useful for tests).
        input_size (int | tuple, optional): resize images to this size
            (bilinear) before the network. Default: None.
        batch_size (int): images per forward. Default: 64.
        is_splits (int): IS splits. Default: 10.
        device (str | torch.device, optional): ``'cpu'`` or ``'cuda'`` (the
            current GPU). Default: CUDA when available, else CPU.
        exclude (list[str]): file names left out of sample folders.
        verbose (bool): torch-fidelity's messages and progress bar.
            Default: False.
        **fidelity_kwargs: more ``calculate_metrics`` options. Default here:
            ``save_cpu_ram=True`` (no loader worker processes, as the images
            are small); pass ``save_cpu_ram=False`` for torch-fidelity's
            workers.
    """

    def __init__(self,
                 config,
                 checkpoint: Optional[str] = None,
                 input_size: Union[int, Sequence[int], None] = None,
                 batch_size: int = 64,
                 is_splits: int = 10,
                 device=None,
                 exclude: Sequence[str] = (),
                 verbose: bool = False,
                 **fidelity_kwargs):
        device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
        fidelity_kwargs.setdefault('save_cpu_ram', True)
        super().__init__(batch_size, is_splits, device.type == 'cuda', exclude, verbose,
                         **fidelity_kwargs)
        self.device = device
        self.model = build_classifier(config, checkpoint).to(self.device).eval()
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        self.input_size = tuple(input_size) if input_size is not None else None

    def extractor_kwargs(self) -> dict:
        return dict(
            feature_extractor=CLASSIFIER_EXTRACTOR,
            classifier_model=self.model,
            classifier_input_size=self.input_size)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """uint8 RGB images B x 3 x H x W -> (pooled features B x D, class
        probabilities B x C), both float64 on the CPU: what the registered
        extractor gives torch-fidelity (probabilities instead of logits)."""
        pooled, logits = classifier_outputs(self.model.eval(), images, self.input_size)
        return pooled.cpu(), logits.softmax(-1).cpu()

    def compute_metrics(self, samples: ImageSource, reference, **kwargs) -> Dict[str, float]:
        """FID / IS as :meth:`GenerationFeatureNet.compute_metrics`, plus
        ``confident_share`` of the samples (percent)."""
        samples = self._images(samples, self.exclude)
        confidences = []  # filled by the extractor: samples first, then the reference
        metrics = super().compute_metrics(
            samples, reference, classifier_confidences=confidences, **kwargs)
        top = torch.cat(confidences)[:len(samples)]
        if len(top) != len(samples):
            raise RuntimeError(f'the extractor saw {len(top)} of {len(samples)} samples')
        metrics['confident_share'] = confident_share(top.numpy())
        return metrics


def build_classifier(config, checkpoint: Optional[str] = None) -> torch.nn.Module:
    """Build the ``model`` of an mmpretrain config in that config's scope and
    load ``checkpoint`` (all of the model's weights must be in it)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    from mmaddp.checkpoint import load_state_into, read_state_dict
    if isinstance(config, (str, os.PathLike)):
        if not osp.isfile(config):
            raise FileNotFoundError(f'Feature network config not found: {config}')
        config = Config.fromfile(str(config))
    elif isinstance(config, dict) and not isinstance(config, Config):
        config = Config(config)
    model_cfg = config.get('model', None)
    if not model_cfg:
        raise ValueError('The feature network config has no model')
    model_cfg = dict(model_cfg)
    if config.get('data_preprocessor', None) is not None:
        model_cfg.setdefault('data_preprocessor', dict(config.data_preprocessor))
    with DefaultScope.overwrite_default_scope(config.get('default_scope', 'mmpretrain')):
        model = MODELS.build(model_cfg)
    if not (callable(getattr(model, 'extract_feat', None)) and hasattr(model, 'head')):
        raise ValueError(f'The feature network ({type(model).__name__}) must be a classifier '
                         'with extract_feat and a head (e.g. mmpretrain ImageClassifier)')
    if checkpoint is None:
        model.init_weights()
        return model
    state = read_state_dict(checkpoint)
    own = model.state_dict()
    if not any(k in own for k in state):
        raise ValueError(f'Checkpoint {checkpoint} is not a checkpoint of this feature network '
                         f'({type(model).__name__}): none of its keys match')
    result = load_state_into(model, state, f'Checkpoint {checkpoint}')
    if result.missing_keys:
        raise ValueError(f'Checkpoint {checkpoint} lacks weights of the feature network: '
                         f'{result.missing_keys[:5]} ({len(result.missing_keys)} missing)')
    return model


def build_feature_net(cfg: dict) -> GenerationFeatureNet:
    """``dict(type='inception', weights_path=...)`` or ``dict(type='classifier',
    config=..., checkpoint=..., input_size=...)``; other keys go to the class."""
    cfg = dict(cfg)
    kind = cfg.pop('type', None)
    if kind == 'inception':
        path = cfg.pop('weights_path', cfg.pop('feature_extractor_weights_path', None))
        return InceptionFeatureNet(path, **cfg)
    if kind == 'classifier':
        if 'config' not in cfg:
            raise ValueError("a 'classifier' feature net needs config=<mmpretrain config>")
        return ClassifierFeatureNet(**cfg)
    raise ValueError(f"feature net type must be 'inception' or 'classifier', got {kind!r}")
