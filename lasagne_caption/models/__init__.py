"""The captioning networks, by kind: the name a checkpoint's metadata records.

>>> sorted(NETWORKS)
['attention', 'seminar']
>>> network_class("transformer")
Traceback (most recent call last):
...
lasagne_caption.errors.UserError: unknown network kind 'transformer' (this version knows attention, seminar): written by a newer lasagne-caption?
"""
from ..errors import UserError
from .attention import AttentionConfig, AttentionModel
from .base import CaptionNetwork, seed_initial_weights
from .config import NetworkConfig
from .embeddings import read_glove
from .losses import masked_cross_entropy
from .seminar import SeminarModel, build_network, param_shapes

NETWORKS = {SeminarModel.kind: SeminarModel, AttentionModel.kind: AttentionModel}


def network_class(kind):
    """The network class of a kind name; an unknown kind is a one-line error."""
    if not isinstance(kind, str) or kind not in NETWORKS:
        raise UserError("unknown network kind %r (this version knows %s): written by a newer "
                        "lasagne-caption?" % (kind, ", ".join(sorted(NETWORKS))))
    return NETWORKS[kind]


__all__ = ["AttentionConfig", "AttentionModel", "CaptionNetwork", "NETWORKS", "NetworkConfig", "SeminarModel", "build_network",
           "masked_cross_entropy", "network_class", "param_shapes", "read_glove", "seed_initial_weights"]
