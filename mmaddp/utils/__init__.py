from .cli import USER_ERRORS, exit_on_bad_input
from .config import check_image_loading, load_tool_config, merge_cfg_options_strict
from .cpu_allocator import keep_freed_host_memory, prepare_cpu_memory
from .launch import close_launch, prepare_launch
from .metrics_file import save_test_metrics

__all__ = [
    'USER_ERRORS', 'exit_on_bad_input', 'keep_freed_host_memory', 'prepare_cpu_memory',
    'check_image_loading', 'merge_cfg_options_strict', 'load_tool_config', 'prepare_launch',
    'close_launch', 'save_test_metrics'
]
