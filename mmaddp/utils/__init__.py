from .checkpoint import load_checkpoint_file, load_state_into, register_safe_checkpoint_globals
from .config import load_tool_config, merge_cfg_options_strict
from .launch import prepare_launch
from .test_metrics import save_test_metrics

__all__ = ["load_checkpoint_file", "load_state_into", "register_safe_checkpoint_globals", "merge_cfg_options_strict", "load_tool_config", "prepare_launch",
           "save_test_metrics"]
