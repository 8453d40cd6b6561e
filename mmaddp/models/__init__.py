from .algorithms import *  # noqa: F401,F403
from .backbones import *  # noqa: F401,F403
from .decoders import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .necks import *  # noqa: F401,F403
from .token_predictors import *  # noqa: F401,F403
from .tokenizers import *  # noqa: F401,F403
