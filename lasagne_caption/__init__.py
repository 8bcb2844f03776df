"""lasagne-caption: the CNN -> LSTM image-captioning seminar on a modern machine.

Importing the package applies :mod:`lasagne_caption.compat` first, so that
``theano`` and ``lasagne`` import and run on theano-pymc and CPython 3.11.
"""
from . import compat  # noqa: F401  (must run before theano/lasagne are imported)

__version__ = "0.1.0"
