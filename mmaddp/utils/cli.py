"""How the tools end on bad input: one line on stderr, not a traceback."""
import os
import os.path as osp
import sys
from typing import Callable

#: what the tools raise for input they refuse (a missing or unreadable file,
#: a checkpoint of the wrong kind or width, an unknown config key, an output
#: file that exists, a non-finite loss: ``NonFiniteLossError`` is a ``FloatingPointError``)
USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, KeyError, FloatingPointError)


def exit_on_bad_input(main: Callable[[], object]) -> None:
    """Call ``main()``; on one of :data:`USER_ERRORS` print
    ``TOOL: error: MESSAGE`` (the first line of the message) on stderr and
    exit with status 1. ``MMADDP_TRACEBACK=1`` re-raises instead (the full
    traceback, for debugging). Other exceptions propagate unchanged."""
    try:
        main()
    except USER_ERRORS as err:
        if os.environ.get('MMADDP_TRACEBACK') == '1':
            raise
        text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        lines = text.strip().splitlines()
        if lines and lines[0].startswith('Caught ') and 'Original Traceback' in text:
            lines = lines[-1:]  # a data-loader worker's error: its own last line
            lines[0] = lines[0].split(': ', 1)[-1]
        line = lines[0] if lines else type(err).__name__
        print(f'{osp.basename(sys.argv[0])}: error: {line}', file=sys.stderr, flush=True)
        sys.exit(1)


def add_frozen_encoder_arguments(parser, what: str) -> None:
    """The arguments shared by the tools that read a frozen ``ADDPViT``
    (``tools/analysis_tools/linear_probe.py``, ``knn_eval.py``): CONFIG,
    CHECKPOINT or ``--random``, ``--seed``, ``--out`` and ``--cfg-options``.
    ``what`` names the tool's action in the help (e.g. ``'probe'``)."""
    from mmengine.config import DictAction
    parser.add_argument('config', help='a classification config with an ADDPViT backbone')
    parser.add_argument('checkpoint', nargs='?', help='ADDP / mmaddp checkpoint of the encoder')
    parser.add_argument(
        '--random',
        action='store_true',
        help=f'{what} the encoder at its initialisation from scratch')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random init')
    parser.add_argument('--out', help='write the result as JSON here')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config (key=value; unknown keys refused)')


def check_frozen_encoder_arguments(parser, args) -> None:
    """Exactly one of CHECKPOINT and ``--random``, and the checkpoint exists;
    ``parser.error`` (one line, status 2) otherwise."""
    if (args.checkpoint is None) == (not args.random):
        parser.error('give a CHECKPOINT or --random (one of them)')
    if args.checkpoint is not None and not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint file not found: {args.checkpoint}')
