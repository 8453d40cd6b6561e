"""Registries of mmaddp.

mmaddp has no registry tree of its own: its pieces are written for the three
OpenMMLab codebases it plugs into. Pretraining and generation models live in
the mmpretrain scope (like MAE); backbones, necks and engine pieces that dense
tasks need are registered in every scope that uses them, so that
``custom_imports=dict(imports=['mmaddp'])`` is all a config needs.
"""
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMDET_OPTIM_WRAPPER_CONSTRUCTORS
from mmdet.registry import OPTIM_WRAPPERS as MMDET_OPTIM_WRAPPERS
from mmdet.registry import TRANSFORMS as MMDET_TRANSFORMS
from mmengine.registry import MODEL_WRAPPERS
from mmpretrain.registry import (BATCH_AUGMENTS, DATASETS, HOOKS, METRICS, MODELS,
                                 OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, TRANSFORMS)
from mmseg.registry import HOOKS as MMSEG_HOOKS
from mmseg.registry import MODELS as MMSEG_MODELS
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMSEG_OPTIM_WRAPPER_CONSTRUCTORS
from mmseg.registry import OPTIM_WRAPPERS as MMSEG_OPTIM_WRAPPERS
from mmseg.registry import TRANSFORMS as MMSEG_TRANSFORMS

#: model registries of the scopes a backbone is usable from
ALL_SCOPE_MODELS = (MODELS, MMDET_MODELS, MMSEG_MODELS)
ALL_SCOPE_OPTIM_WRAPPER_CONSTRUCTORS = (OPTIM_WRAPPER_CONSTRUCTORS,
                                        MMDET_OPTIM_WRAPPER_CONSTRUCTORS,
                                        MMSEG_OPTIM_WRAPPER_CONSTRUCTORS)
ALL_SCOPE_OPTIM_WRAPPERS = (OPTIM_WRAPPERS, MMDET_OPTIM_WRAPPERS, MMSEG_OPTIM_WRAPPERS)
ALL_SCOPE_HOOKS = (HOOKS, MMDET_HOOKS, MMSEG_HOOKS)
ALL_SCOPE_TRANSFORMS = (TRANSFORMS, MMDET_TRANSFORMS, MMSEG_TRANSFORMS)


def _register_everywhere(registries, name=None):

    def decorator(cls):
        for registry in registries:
            registry.register_module(name=name or cls.__name__, module=cls)
        return cls

    return decorator


def register_backbone(name=None):
    """Register a model class in the mmpretrain, mmdet and mmseg scopes."""
    return _register_everywhere(ALL_SCOPE_MODELS, name)


def register_neck(name=None):
    """Register a neck in the dense-task scopes (mmdet and mmseg)."""
    return _register_everywhere((MMDET_MODELS, MMSEG_MODELS), name)


def register_optim_wrapper_constructor(name=None):
    """Register an optimizer-wrapper constructor in all three scopes."""
    return _register_everywhere(ALL_SCOPE_OPTIM_WRAPPER_CONSTRUCTORS, name)


def register_optim_wrapper(name=None):
    """Register an optimizer wrapper in all three scopes."""
    return _register_everywhere(ALL_SCOPE_OPTIM_WRAPPERS, name)


def register_hook(name=None):
    """Register a hook in all three scopes (training runs in any of them)."""
    return _register_everywhere(ALL_SCOPE_HOOKS, name)


def register_transform(name=None):
    """Register a data transform in all three scopes."""
    return _register_everywhere(ALL_SCOPE_TRANSFORMS, name)


__all__ = [
    'MODELS', 'MMDET_MODELS', 'MMSEG_MODELS', 'MODEL_WRAPPERS', 'BATCH_AUGMENTS', 'DATASETS',
    'HOOKS', 'METRICS', 'TRANSFORMS', 'register_backbone', 'register_neck',
    'register_optim_wrapper', 'register_optim_wrapper_constructor', 'register_hook',
    'register_transform'
]
