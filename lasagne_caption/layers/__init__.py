"""Lasagne layers the seminar needs and PyPI Lasagne 0.1 lacks."""
from .broadcast import BroadcastLayer, UnbroadcastLayer
from .shape import ConcatLayer, SliceLayer
from .recurrent import GRULayer, LSTMLayer
from .encoder_head import RegionDenseLayer, RegionMeanLayer, mobilenet_v2_head

__all__ = ["BroadcastLayer", "UnbroadcastLayer", "ConcatLayer", "SliceLayer", "LSTMLayer", "GRULayer",
           "RegionDenseLayer", "RegionMeanLayer", "mobilenet_v2_head"]
