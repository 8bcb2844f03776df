"""Network configurations: every option that rebuilds a network, checked on construction.

A configuration is stored in checkpoint metadata (``"network"``) and read
back with :meth:`NetworkConfig.from_dict`, which refuses options it does not
know: such a file was written by a newer version for a network this one
would build differently.

>>> config = NetworkConfig(n_tokens=10, code_size=4)
>>> config.units, config.lstm_variant
(200, 'master')
>>> NetworkConfig.from_dict({"n_tokens": 10, "code_size": 4, "colour": "red"})
Traceback (most recent call last):
...
lasagne_caption.errors.UserError: unknown network option colour: written by a newer lasagne-caption? (this version knows n_tokens, code_size, embed_size, units, image_inject, cell, dropout, grad_clipping, freeze_embeddings, lstm_variant)
"""
import dataclasses

import numpy as np

from ..errors import UserError
from ..ops import LSTM_VARIANTS, MASTER

# sizes past these are not a captioning network but a typo (or a hostile
# file): refused before any memory is allocated for them
MAX_TOKENS = 1000000
MAX_CODE_SIZE = 1000000
MAX_UNITS = 8192


def check_whole(config, name, top):
    """``config.name`` is a whole number in [1, top] (a plain int afterwards)."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError("%s must be a whole number, not %r" % (name, value))
    if not 1 <= value <= top:
        raise UserError("%s must be between 1 and %d, not %d" % (name, top, value))
    setattr(config, name, int(value))


def check_real(config, name, low, high):
    """``config.name`` is a finite number in [low, high] (a float afterwards)."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not np.isfinite(value) or not low <= value <= high:
        raise UserError("%s must be a number in [%g, %g], not %r" % (name, low, high, value))
    setattr(config, name, float(value))


def check_choice(config, name, allowed):
    if getattr(config, name) not in allowed:
        raise UserError("%s must be one of %s, not %r"
                        % (name, ", ".join(allowed), getattr(config, name)))


class ConfigFromDict:
    """``from_dict``/``to_dict`` of a dataclass configuration."""

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, options):
        """The config a metadata dict describes; unknown or missing options are refused.

        An option this version does not know means the file was written by
        a newer version for a network this one would build differently.
        """
        if not isinstance(options, dict):
            raise UserError("the network options must be a mapping, not %s"
                            % type(options).__name__)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise UserError("unknown network option%s %s: written by a newer lasagne-caption? "
                            "(this version knows %s)" % ("s" if len(unknown) > 1 else "",
                                                         ", ".join(map(str, unknown)),
                                                         ", ".join(fields)))
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
        missing = [n for n in required if n not in options]
        if missing:
            raise UserError("network options lack %s" % ", ".join(missing))
        return cls(**options)


@dataclasses.dataclass
class NetworkConfig(ConfigFromDict):
    """Everything needed to rebuild the seminar network; stored in checkpoint metadata.

    The defaults are the seminar notebook's (``grad_clipping=10``, Lasagne
    master's LSTM). Every field is checked on construction: a wrong type or
    size raises :class:`UserError`.
    """
    n_tokens: int
    code_size: int
    embed_size: int = 128
    units: int = 200
    image_inject: str = "cell_init"   # or "first_input" (Show and Tell)
    cell: str = "lstm"                # or "gru"
    dropout: float = 0.5
    grad_clipping: float = 10.0
    freeze_embeddings: bool = False
    # which Lasagne the recurrent layer follows: master (the seminar's) or
    # LASAGNE_01 (this toolkit's 0.1 checkpoints): the LSTM's output gate,
    # and whether a GRU learns its hid_init
    lstm_variant: str = MASTER

    def __post_init__(self):
        for name, top in (("n_tokens", MAX_TOKENS), ("code_size", MAX_CODE_SIZE),
                          ("embed_size", MAX_UNITS), ("units", MAX_UNITS)):
            check_whole(self, name, top)
        for name, low, high in (("dropout", 0.0, 1.0), ("grad_clipping", 0.0, 1e30)):
            check_real(self, name, low, high)
        if self.dropout >= 1.0:
            raise UserError("dropout must be below 1, not %r" % self.dropout)
        if not isinstance(self.freeze_embeddings, bool):
            raise UserError("freeze_embeddings must be true or false, not %r"
                            % (self.freeze_embeddings,))
        for name, allowed in (("image_inject", ("cell_init", "first_input")),
                              ("cell", ("lstm", "gru")), ("lstm_variant", LSTM_VARIANTS)):
            check_choice(self, name, allowed)
