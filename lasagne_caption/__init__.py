"""lasagne-caption: the CNN -> LSTM image-captioning seminar on a modern machine.

Importing the package applies :mod:`lasagne_caption.compat` first, so that
``theano`` and ``lasagne`` import and run on theano-pymc and CPython 3.11,
then makes ``lasagne.layers.LSTMLayer``/``GRULayer`` Lasagne master's (the
seminar's; :func:`lasagne_caption.compat.install_master_recurrent_layers`).
"""
from . import compat  # noqa: F401  (must run before theano/lasagne are imported)

compat.install_master_recurrent_layers()

__version__ = "0.3.0"
