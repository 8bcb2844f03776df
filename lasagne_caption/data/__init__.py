"""Caption datasets: readers of three sources, one on-disk layout, and the batches.

This package only hands names on; each job lives in its own module, lower
ones first (a module imports only those above it in this list):

* :mod:`~lasagne_caption.data.readers`: the input formats (caption pickle,
  ``.npy`` codes, text lines, Flickr8k tokens, COCO JSON), :class:`DataWarning`;
* :mod:`~lasagne_caption.data.dataset`: the layout of a dataset folder,
  :func:`load_dataset`, :func:`default_splits` and the one writer;
* :mod:`~lasagne_caption.data.archives`: streaming copies and the one safe
  tar/zip extractor;
* :mod:`~lasagne_caption.data.output`: the checked, locked, staged ``--out`` folder;
* :mod:`~lasagne_caption.data.batches`: :func:`generate_batch`, :func:`iterate_captions`, :func:`epoch_batches`;
* :mod:`~lasagne_caption.data.download`: fetching Flickr8k;
* :mod:`~lasagne_caption.data.prepare`: Flickr8k, COCO and the seminar archive
  into a dataset folder;
* :mod:`~lasagne_caption.data.__main__`: ``python -m lasagne_caption.data``
  (run ``--help``).
"""
from ..vocab import END, START
from .batches import epoch_batches, generate_batch, iterate_captions
from .dataset import (CAPTIONS, CODES, DATASET_FILES, DATASET_FORMAT, META, NAMES, SOURCES, SPLITS,
                      SPLITS_FILE, CaptionDataset, default_splits, load_dataset)
from .prepare import (FLICKR_FEATURES, FLICKR_SPLITS, encode_images, prepare_coco,
                      prepare_flickr8k, prepare_seminar)
from .readers import (DataWarning, read_caption_pickle, read_codes, read_coco,
                      read_flickr8k_captions, read_lines)

__all__ = [
    "END", "START", "epoch_batches", "generate_batch", "iterate_captions",
    "CAPTIONS", "CODES", "DATASET_FILES", "DATASET_FORMAT", "META", "NAMES", "SOURCES", "SPLITS",
    "SPLITS_FILE", "CaptionDataset", "default_splits", "load_dataset",
    "FLICKR_FEATURES", "FLICKR_SPLITS", "encode_images", "prepare_coco", "prepare_flickr8k",
    "prepare_seminar",
    "DataWarning", "read_caption_pickle", "read_codes", "read_coco", "read_flickr8k_captions",
    "read_lines",
]
