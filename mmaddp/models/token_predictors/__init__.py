from .token_predictor import TokenPredictor

__all__ = ['TokenPredictor']
