"""The seminar's ``pretrained_lenet.py``: BVLC GoogLeNet in Lasagne, on the toolkit.

The course shipped this module beside the captioning notebook, which did::

    from pretrained_lenet import build_model, preprocess, MEAN_VALUES

    lenet = build_model()
    lenet_weights = pickle.load(open('data/blvc_googlenet.pkl', 'rb'),
                                encoding='latin1')['param values']
    set_all_param_values(lenet["prob"], lenet_weights)
    get_cnn_features = theano.function([lenet['input'].input_var],
                                       lasagne.layers.get_output(lenet['loss3/classifier']))
    img = preprocess(plt.imread('photo.jpg'))          # (1, 3, 224, 224) BGR minus the mean

``build_model`` is the Lasagne Recipes network (``modelzoo/googlenet.py``) as
built by :func:`lasagne_caption.encoders.googlenet.build_model`: same layer
names, same parameter order as ``'param values'`` in ``blvc_googlenet.pkl``,
Caffe's cross-correlation. ``preprocess`` and ``MEAN_VALUES`` are the
recipe's: shorter side to 224, centre crop, RGB -> BGR, minus the mean.

:func:`load_weights` (not in the course's module) reads the pickle with the
toolkit's safe unpickler (numpy arrays only, Python 2 pickles included) and,
when the file is absent, raises ``FileNotFoundError`` with a one-line message
saying where to get it, and that MobileNetV2 can encode photos instead.
"""
import os

import lasagne_caption  # noqa: F401  (compat layer first: theano-pymc, Python 3.11)
import numpy as np
from lasagne.utils import floatX

from lasagne_caption.encoders import default_model_path
from lasagne_caption.encoders import googlenet as _googlenet
from lasagne_caption.encoders.preprocess import resize_image

__all__ = ["build_model", "preprocess", "MEAN_VALUES", "load_weights", "WEIGHTS_URL",
           "default_weights_path"]

# Caffe's ImageNet mean, BGR, shaped to subtract from a (3, H, W) image
MEAN_VALUES = np.array([104, 117, 123]).reshape((3, 1, 1))

WEIGHTS_FILENAME = _googlenet.MODEL_FILENAME          # blvc_googlenet.pkl
WEIGHTS_URL = _googlenet.MODEL_URL


def build_model():
    """BVLC GoogLeNet as a dict of Lasagne layers (``'input'`` ... ``'loss3/classifier'``, ``'prob'``)."""
    return _googlenet.build_model()


def preprocess(img):
    """A photo (as ``plt.imread`` returns it) -> float32 (1, 3, 224, 224), BGR minus MEAN_VALUES.

    As the recipe: the shorter side is scaled to 224 and the centre cropped.
    Grayscale photos get three channels, an alpha channel is dropped, and
    float images in [0, 1] (``plt.imread`` of a PNG) are scaled to 0..255.
    """
    im = np.asarray(img)
    if im.ndim == 2:
        im = np.repeat(im[:, :, np.newaxis], 3, axis=2)
    im = im[:, :, :3]
    if im.dtype.kind == "f" and im.max() <= 1.0:
        im = im * 255.0
    im = np.clip(np.round(im), 0, 255).astype(np.uint8)
    im = resize_image(im, (224, 224), keep_aspect=True)
    # shuffle axes to c01, RGB -> BGR, subtract the mean
    im = np.swapaxes(np.swapaxes(im, 1, 2), 0, 1)[::-1, :, :]
    im = im - MEAN_VALUES
    return floatX(im[np.newaxis])


def default_weights_path():
    """Where ``blvc_googlenet.pkl`` is looked for: ``$LASAGNE_CAPTION_GOOGLENET``, else
    the toolkit's model folder (``~/.cache/lasagne-caption/models/blvc_googlenet.pkl``)."""
    return os.environ.get("LASAGNE_CAPTION_GOOGLENET") or default_model_path("googlenet")


def load_weights(path=None):
    """The dict stored in ``blvc_googlenet.pkl`` (``'param values'``, ``'synset words'``, ...).

    Raises ``FileNotFoundError`` with a one-line message when the file is
    absent, and the toolkit's ``UserError`` when it is not that pickle.
    """
    path = os.fspath(path) if path is not None else default_weights_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(
            "%s not found at %s: download it from %s (Lasagne Recipes) to caption photos with "
            "GoogLeNet as the seminar did, or encode them with MobileNetV2 instead "
            "(lasagne_caption.encoders.get_encoder('mobilenet_v2'), the encoder of the "
            "prepared Flickr8k codes)" % (WEIGHTS_FILENAME, path, WEIGHTS_URL))
    return _googlenet.load_pickle(path)
