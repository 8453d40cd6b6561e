from .addp import ADDP

__all__ = ['ADDP']
