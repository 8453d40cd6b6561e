from .vq_tokenizer import VQTokenizer

__all__ = ['VQTokenizer']
