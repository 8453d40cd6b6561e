"""ADDP's parts, one folder each: ``tokenizers`` (VQ), ``token_predictors``
(MAGE), ``backbones`` (the encoder), ``decoders`` (the token decoder),
``heads`` (the denoising loss), ``diffusion`` (mask schedule, forward
process, sampler), ``algorithms`` (ADDP itself), ``adapters`` (downstream:
pyramid, window attention, code-id input), ``layers`` (shared blocks) and
``utils`` (data preprocessors, batch augments)."""
from .adapters import *  # noqa: F401,F403
from .algorithms import *  # noqa: F401,F403
from .backbones import *  # noqa: F401,F403
from .decoders import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .token_predictors import *  # noqa: F401,F403
from .tokenizers import *  # noqa: F401,F403
