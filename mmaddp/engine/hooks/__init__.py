from .generation_eval_hook import GenerationEvalHook

__all__ = ['GenerationEvalHook']
