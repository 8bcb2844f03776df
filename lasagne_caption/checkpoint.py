"""Checkpoints in the seminar's format, written atomically, loaded safely.

``wrote_net.params`` is what the seminar's notebook writes: a pickle of the
list of arrays in ``lasagne.layers.get_all_param_values`` order, so files
move freely between the notebook and this toolkit. Beside it:

* ``wrote_net.params.json``: human-readable metadata (format version,
  network kind and options, vocabulary, the data and the image encoder and
  feature tap its codes came from, epoch, optimizer step, RNG seeds);
* ``wrote_net.params.state-<hash>.npz``: Adam's moments and a copy of the
  metadata, named after the sha256 of the parameter file it belongs to.

Every file is written to a temporary name, fsynced and renamed. The state
file is written before the parameter file is replaced and the old one is
removed after, so whenever the process dies the parameter file on disk has
its matching state file: resume never mixes two saves.

A pickle can run any code its author chose, so parameter files are read
with an unpickler that only builds numpy arrays and plain containers.

This module owns the format: :func:`make_metadata` writes what
:func:`read_network` reads, :func:`load_model` rebuilds a network for
captioning and :func:`resume` one for training, optimizer state included.
A kind of network or a format this version does not know is refused.
"""
import glob
import hashlib
import json
import os
import pickle
import zipfile

import numpy as np

from . import packed, safe_pickle
from .errors import UserError
from .files import atomic_write, file_digest

def safe_load_arrays(path):
    """Read a pickled list of numpy arrays (seminar ``wrote_net.params``), refusing code.

    Python 2 pickles (the seminar ran on Python 2) are read with latin1. A
    packed file (a shipped model's ``.npz``, :mod:`lasagne_caption.packed`)
    is read without pickle and gives float32 arrays the same way.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise UserError("%s: checkpoint not found" % path)
    if data[:4] == packed.ZIP_MAGIC:
        return packed.load_packed(path)
    try:
        values = safe_pickle.loads(data, allow=safe_pickle.NUMPY_ARRAYS)
    except safe_pickle.Refused as exc:
        raise UserError("%s: not a plain parameter pickle (%s); refusing to load it"
                        % (path, exc))
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OverflowError, MemoryError, RecursionError,
            UnicodeDecodeError) as exc:
        raise UserError("%s: truncated or corrupt parameter pickle (%s)"
                        % (path, type(exc).__name__))
    if isinstance(values, tuple):
        values = list(values)
    if not isinstance(values, list) or not all(isinstance(v, np.ndarray) for v in values):
        raise UserError("%s: expected a list of numpy arrays, found %s"
                        % (path, type(values).__name__))
    for i, v in enumerate(values):
        if v.dtype.kind not in "fiu":
            raise UserError("%s: parameter %d holds %s values, not numbers"
                            % (path, i, v.dtype))
    return values


def metadata_path(path):
    return path + ".json"


def _state_path(path, digest):
    return "%s.state-%s.npz" % (path, digest[:16])


def _encoder_path(path, digest):
    return "%s.encoder-%s.npz" % (path, digest[:16])


def save_checkpoint(path, param_values, metadata, optimizer_values=(), encoder_values=None):
    """Save parameters, metadata and optimizer state so that any kill leaves a good set.

    ``encoder_values``: a fine-tuned encoder head's weights (``{"Conv_1/W":
    array, ...}``), written beside the parameters as
    ``PATH.encoder-<hash>.npz`` (named, like the state file, after the
    parameter file it belongs to) and recorded in the metadata's
    ``encoder.head.file``; the parameter file itself keeps the seminar's
    format and order.
    """
    payload = pickle.dumps([np.asarray(v) for v in param_values], protocol=2)
    digest = hashlib.sha256(payload).hexdigest()
    metadata = dict(metadata, params_sha256=digest)
    new_files = [_state_path(path, digest)]
    if encoder_values is not None:
        new_files.append(_encoder_path(path, digest))
        encoder = dict(metadata.get("encoder") or {})
        encoder["head"] = dict(encoder.get("head") or {}, file=os.path.basename(new_files[1]))
        metadata["encoder"] = encoder
    meta_text = json.dumps(metadata, indent=1, sort_keys=True)
    state = {"optimizer_%03d" % i: np.asarray(v) for i, v in enumerate(optimizer_values)}
    state["metadata"] = np.array(meta_text)
    old_files = set(glob.glob(glob.escape(path) + ".state-*.npz")) \
        | set(glob.glob(glob.escape(path) + ".encoder-*.npz"))
    atomic_write(new_files[0], lambda f: np.savez(f, **state))
    if encoder_values is not None:
        atomic_write(new_files[1], lambda f: np.savez(f, **{k: np.asarray(v, np.float32)
                                                            for k, v in encoder_values.items()}))
    atomic_write(path, lambda f: f.write(payload))
    atomic_write(metadata_path(path), lambda f: f.write(meta_text.encode("utf-8")))
    for old in old_files - set(new_files):
        os.unlink(old)


def load_head(path, metadata):
    """The fine-tuned encoder head a checkpoint records, or None.

    Returns ``(HeadConfig, weights)`` with ``weights`` as
    :class:`~lasagne_caption.models.finetune.EncoderHead` takes them, read
    from the file named in the metadata's ``encoder.head`` (without pickle).
    """
    from .models.finetune import HeadConfig
    head = ((metadata or {}).get("encoder") or {}).get("head")
    if head is None:
        return None
    where = metadata_path(path)
    if not isinstance(head, dict) or not isinstance(head.get("file"), str) \
            or os.path.basename(head["file"]) != head["file"]:
        raise UserError('%s: "encoder.head" must name its weights file beside the checkpoint'
                        % where)
    try:
        config = HeadConfig.from_dict({k: v for k, v in head.items() if k != "file"})
    except UserError as exc:
        raise UserError("%s: encoder head: %s" % (where, exc))
    weights_file = os.path.join(os.path.dirname(os.path.abspath(path)), head["file"])
    try:
        with np.load(weights_file, allow_pickle=False) as data:
            values = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise UserError("%s: the fine-tuned encoder weights %s are missing" % (path, head["file"]))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError("%s: unreadable encoder weights (%s)" % (weights_file, exc))
    weights = {}
    for name in ("Conv_1", "Logits"):
        if name + "/W" in values and name + "/b" in values:
            weights[name] = (values[name + "/W"], values[name + "/b"])
    return config, weights


def _build(cls, config, vocabulary, path, metadata, **kwargs):
    """``cls(config, vocabulary, **kwargs)``, with the encoder head the metadata records."""
    head = load_head(path, metadata)
    if head is None:
        return cls(config, vocabulary, **kwargs)
    from .models.finetune import EncoderHead
    head_config, weights = head
    try:
        encoder_head = EncoderHead(head_config, weights)
    except UserError as exc:
        raise UserError("%s: %s" % (path, exc))
    return cls(config, vocabulary, head=encoder_head, **kwargs)


def load_metadata(path):
    """Metadata of the parameter file at ``path`` (None for a bare seminar file)."""
    meta_file = metadata_path(path)
    if not os.path.exists(meta_file):
        return None
    try:
        with open(meta_file, encoding="utf-8") as f:
            metadata = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError("%s: metadata is not valid JSON (%s)" % (meta_file, exc))
    except OSError as exc:
        raise UserError("%s: cannot read metadata (%s)" % (meta_file, exc.strerror))
    if not isinstance(metadata, dict):
        raise UserError("%s: metadata must be a JSON object, not %s"
                        % (meta_file, type(metadata).__name__))
    digest = file_digest(path)
    if metadata.get("params_sha256") != digest:
        # killed between replacing the parameters and their metadata:
        # the state file written before the parameters holds the right copy
        state = _load_state_file(path, digest)
        metadata = json.loads(str(state["metadata"]))
    return metadata


def _load_state_file(path, digest):
    state_file = _state_path(path, digest)
    if not os.path.exists(state_file):
        raise UserError("%s: no optimizer state matches these parameters (%s missing)"
                        % (path, os.path.basename(state_file)))
    try:
        with np.load(state_file, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError("%s: unreadable optimizer state (%s)" % (state_file, exc))


def load_optimizer_state(path):
    """Adam's arrays saved with the parameter file at ``path``, in order."""
    state = _load_state_file(path, file_digest(path))
    keys = sorted(k for k in state if k.startswith("optimizer_"))
    return [state[k] for k in keys]


# "lasagne-caption checkpoint 1": version 0.1 of this toolkit, whose LSTM
# computed PyPI Lasagne 0.1's output gate; 2: Lasagne master's (the seminar's),
# recorded as network.lstm_variant; 3: adds the network kind and the encoder
FORMAT = "lasagne-caption checkpoint 3"
FORMAT_LASAGNE_01_LSTM = "lasagne-caption checkpoint 1"
FORMATS = (FORMAT_LASAGNE_01_LSTM, "lasagne-caption checkpoint 2", FORMAT)


def encoder_of(features):
    """``{"name", "tap"}`` of a dataset's ``features`` (``"mobilenet_v2_logits"``), or None."""
    if not isinstance(features, str) or "_" not in features:
        return None
    name, tap = features.rsplit("_", 1)
    return {"name": name, "tap": tap}


def make_metadata(model, dataset, epoch, step, run):
    """The metadata of a checkpoint of ``model`` trained on ``dataset``.

    ``run`` holds the options of the training run (seed, batch size, ...)
    that a resume needs or checks; see :mod:`lasagne_caption.train`.
    """
    features = dataset.meta.get("features")
    encoder = encoder_of(features)
    head = getattr(model, "head", None)
    if head is not None:
        # the file is named when saved (save_checkpoint)
        encoder = dict(encoder or {}, head=head.config.to_dict())
    return dict({
        "format": FORMAT,
        "kind": model.kind,
        "network": model.config.to_dict(),
        "vocabulary": model.vocab.words,
        "data": {"name": dataset.name, "path": str(dataset.path), "features": features},
        "encoder": encoder,
        "epoch": epoch,
        "optimizer": {"name": "adam", "step": step, "learning_rate": model.learning_rate},
        "learning_rate": model.learning_rate,
    }, **run)


def read_decoding(metadata, path):
    """The decoding setting a checkpoint's metadata recommends (``"decoding"``), checked.

    Returns ``{}`` when it names none, else a dict with ``"beam"`` (int >= 1)
    and ``"length_normalization"`` (float >= 0): the best setting on the dev
    split, which ``caption`` and ``evaluate`` use unless told otherwise.

    >>> read_decoding({"decoding": {"beam": 5, "length_normalization": 0.7}}, "m.npz")
    {'beam': 5, 'length_normalization': 0.7}
    >>> read_decoding({"decoding": {"beam": 0}}, "m.npz")
    Traceback (most recent call last):
    ...
    lasagne_caption.errors.UserError: m.npz.json: "decoding" must be {"beam": an integer >= 1, "length_normalization": a number >= 0}
    """
    decoding = (metadata or {}).get("decoding")
    if decoding is None:
        return {}
    beam = decoding.get("beam") if isinstance(decoding, dict) else None
    alpha = decoding.get("length_normalization", 0.0) if isinstance(decoding, dict) else None
    if not (isinstance(beam, int) and not isinstance(beam, bool) and beam >= 1
            and isinstance(alpha, (int, float)) and not isinstance(alpha, bool)
            and 0 <= alpha < float("inf")):
        raise UserError('%s: "decoding" must be {"beam": an integer >= 1, '
                        '"length_normalization": a number >= 0}' % metadata_path(path))
    return {"beam": beam, "length_normalization": float(alpha)}


def read_network(metadata, path):
    """The network class, configuration and vocabulary a metadata dict names.

    A checkpoint of format 1 was trained with Lasagne 0.1's LSTM: it gets
    that variant, so it keeps computing what it was trained to compute.
    Formats 1 and 2 hold the seminar network. Anything malformed, or from a
    newer version, raises :class:`UserError` naming the metadata file.

    Returns
    -------
    cls : a :class:`~lasagne_caption.models.base.CaptionNetwork` subclass
    config : ``cls.Config``
    vocabulary : Vocabulary
    """
    from .models import network_class
    from .vocab import Vocabulary
    where = metadata_path(path)
    if not isinstance(metadata, dict):
        raise UserError("%s: metadata must be a JSON object, not %s"
                        % (where, type(metadata).__name__))
    fmt = metadata.get("format", FORMAT_LASAGNE_01_LSTM)
    if fmt not in FORMATS:
        raise UserError("%s: unknown format %r (this version reads up to %r): written by a "
                        "newer lasagne-caption?" % (where, fmt, FORMAT))
    kind = metadata.get("kind") if fmt == FORMAT else "seminar"
    try:
        cls = network_class(kind)
    except UserError as exc:
        raise UserError("%s: %s" % (where, exc))
    options = metadata.get("network")
    if not isinstance(options, dict):
        raise UserError("%s: 'network' must be a JSON object of network options, not %s"
                        % (where, type(options).__name__))
    if fmt == FORMAT_LASAGNE_01_LSTM:
        if "lstm_variant" in options:
            raise UserError("%s: format 1 metadata cannot name an lstm_variant" % where)
        options = dict(options, lstm_variant="lasagne-0.1")
    try:
        config = cls.Config.from_dict(options)
    except UserError as exc:
        raise UserError("%s: %s" % (where, exc))
    except TypeError as exc:   # a wrong argument count or name
        raise UserError("%s: bad network options (%s)" % (where, exc))
    words = metadata.get("vocabulary")
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise UserError("%s: 'vocabulary' must be a list of words" % where)
    try:
        vocabulary = Vocabulary(words)
    except (UserError, ValueError, TypeError) as exc:
        raise UserError("%s: bad vocabulary (%s)" % (where, exc))
    if len(vocabulary) != config.n_tokens:
        raise UserError("%s: the vocabulary has %d words, the network %d"
                        % (where, len(vocabulary), config.n_tokens))
    return cls, config, vocabulary


def check_param_shapes(values, cls, config, path):
    """Refuse parameter arrays that do not fit ``config``, before a network is built."""
    expected = cls.param_shapes(config)
    if len(values) != len(expected):
        raise UserError("%s: %d parameter arrays, the network in its metadata has %d"
                        % (path, len(values), len(expected)))
    for i, (value, shape) in enumerate(zip(values, expected)):
        if tuple(value.shape) != shape:
            raise UserError("%s: parameter %d has shape %s, the network in its metadata "
                            "expects %s" % (path, i, tuple(value.shape), shape))


def _check_finite(values, path):
    for i, value in enumerate(values):
        if not np.isfinite(value).all():
            raise UserError("%s: parameter %d has NaN or infinite values; the network it "
                            "describes cannot caption" % (path, i))


def seminar_config(values, vocab, path):
    """The seminar network's options read off a bare ``wrote_net.params``.

    The seminar ran on Lasagne master, so its LSTM is master's (the default).
    Only the seminar's layout (image as the LSTM's cell state) is recognised:
    parameter 0 is the embedding (n_tokens, embed), parameter 1 the image
    projection (code_size, units).
    """
    from .models import NetworkConfig
    if len(values) < 2 or values[0].ndim != 2 or values[1].ndim != 2:
        raise UserError("%s: not the seminar's parameter layout; train with this toolkit "
                        "to get a checkpoint with metadata" % path)
    if values[0].shape[0] != len(vocab):
        raise UserError("%s: the embedding has %d rows but the vocabulary %d words"
                        % (path, values[0].shape[0], len(vocab)))
    return NetworkConfig(n_tokens=len(vocab), code_size=values[1].shape[0],
                         embed_size=values[0].shape[1], units=values[1].shape[1])


def load_model(path, vocab=None):
    """Rebuild the network a checkpoint describes and load its parameters.

    Parameters
    ----------
    path : str
        The parameter file; its metadata (``PATH.json``) names the network
        kind and options and the vocabulary.
    vocab : str, optional
        A vocabulary file (``Vocabulary.save`` format) for a bare seminar
        parameter file, which has no metadata.

    Returns
    -------
    model : a :class:`~lasagne_caption.models.base.CaptionNetwork`
    metadata : dict ({} for a bare seminar file)
    """
    from .models import SeminarModel
    from .vocab import Vocabulary
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UserError("%s: is a folder, not a parameter file" % path)
    values = safe_load_arrays(path)
    metadata = load_metadata(path)
    if metadata is not None:
        cls, config, vocabulary = read_network(metadata, path)
    elif vocab is not None:
        vocabulary = Vocabulary.load(vocab)
        cls, config = SeminarModel, seminar_config(values, vocabulary, path)
        metadata = {}
    else:
        raise UserError("%s has no metadata (%s): a bare seminar parameter file needs its "
                        "vocabulary, pass --vocab FILE (vocab=FILE in Python)"
                        % (path, metadata_path(path)))
    check_param_shapes(values, cls, config, path)
    _check_finite(values, path)
    model = _build(cls, config, vocabulary, path, metadata)
    model.set_param_values(values, path)
    return model, metadata


def resume(path, image_shape=None, reset_optimizer=False):
    """The network of a training checkpoint with its parameters and Adam state.

    Parameters
    ----------
    path : str
        A checkpoint written by :func:`save_checkpoint` (with metadata).
    image_shape : tuple, optional
        The image input of the data to train on; a checkpoint for another
        shape is refused before its network is built.
    reset_optimizer : bool
        If the saved optimizer state is missing or damaged, start Adam's
        moments anew (with a note) instead of refusing.

    Returns
    -------
    model : a :class:`~lasagne_caption.models.base.CaptionNetwork`
    metadata : dict
    """
    values = safe_load_arrays(path)
    metadata = load_metadata(path)
    if metadata is None:
        raise UserError("%s has no metadata (%s)" % (path, metadata_path(path)))
    cls, config, vocabulary = read_network(metadata, path)
    from .models.finetune import BLOCK16_SHAPE
    head = load_head(path, metadata)
    model_shape = cls.image_shape_of(config) if head is None else BLOCK16_SHAPE
    if image_shape is not None and tuple(image_shape) != model_shape:
        raise UserError("%s: the checkpoint expects image codes of shape %s, the data has %s"
                        % (path, model_shape, tuple(image_shape)))
    check_param_shapes(values, cls, config, path)
    _check_finite(values, path)
    for key, mapping in (("epoch", metadata), ("step", metadata.get("optimizer"))):
        value = (mapping or {}).get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError("%s: '%s' must be a whole number, not %r"
                            % (metadata_path(path), key, value))
    model = _build(cls, config, vocabulary, path, metadata,
                   learning_rate=metadata.get("learning_rate", 1e-3))
    model.set_param_values(values, path)
    _restore_optimizer(model, path, reset_optimizer)
    return model, metadata


def _restore_optimizer(model, path, reset):
    """Load Adam's moments saved with the checkpoint (or start them anew if ``reset``)."""
    optimizer = model.optimizer_state
    try:
        values = load_optimizer_state(path)
        if len(values) != len(optimizer):
            raise UserError("%s: optimizer state has %d arrays, expected %d"
                            % (path, len(values), len(optimizer)))
        for var, value in zip(optimizer, values):
            if value.shape != var.get_value(borrow=True).shape:
                raise UserError("%s: optimizer state array of shape %s, expected %s"
                                % (path, value.shape, var.get_value(borrow=True).shape))
    except UserError as exc:
        if not reset:
            raise UserError("%s. The weights are intact: add --reset-optimizer to resume them "
                            "with fresh Adam moments" % exc)
        print("--reset-optimizer: resuming with fresh Adam moments (%s)" % exc)
        return
    for var, value in zip(optimizer, values):
        var.set_value(value.astype(var.dtype))
