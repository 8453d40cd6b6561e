"""Reading checkpoints: safe unpickling (:mod:`.io`) and the layouts of the
authors' releases and of mmaddp's own files (:mod:`.layouts`)."""
from .io import load_checkpoint_file, load_state_into, register_safe_checkpoint_globals
from .layouts import filter_state_dict, read_state_dict, recognise_layout, unwrap_state_dict
from .resume import check_runner_checkpoint, newest_readable_checkpoint

__all__ = [
    'load_checkpoint_file', 'load_state_into', 'register_safe_checkpoint_globals',
    'filter_state_dict', 'read_state_dict', 'recognise_layout', 'unwrap_state_dict',
    'check_runner_checkpoint', 'newest_readable_checkpoint'
]
