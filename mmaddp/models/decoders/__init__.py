from .token_decoder import TokenDecoder

__all__ = ['TokenDecoder']
