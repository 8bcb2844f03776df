"""Preparing a dataset folder from one of three sources.

* Flickr8k (:func:`prepare_flickr8k`): ``Flickr8k.token.txt``,
  ``Flickr_8k.{train,dev,test}Images.txt`` and precomputed codes in
  ``codes/`` (MobileNetV2 logits or pooled features), or photos in
  ``images/`` that :func:`encode_images` encodes; the official split, with
  ``dev`` called ``val``. ``features="grid"`` encodes the photos into
  MobileNetV2's 7x7x1280 map, ``features="block16"`` into the 7x7x320 output
  of its last inverted-residual block (the input of ``Conv_1``), stored as
  uint8 (:func:`prepare_grid`);
* MS-COCO (:func:`prepare_coco`): a captions JSON, with codes given by the
  user; :func:`~lasagne_caption.data.dataset.default_splits`;
* the seminar (:func:`prepare_seminar`): ``image_codes.npy`` +
  ``caption_tokens.pcl`` (a Python 2 pickle), as a folder or as
  ``data.tar.gz``, whose two files are kept byte for byte.

Each reads its source with :mod:`~lasagne_caption.data.readers`, checks that
the train and val splits have images, and writes through
:class:`~lasagne_caption.data.output.DatasetOutput` and
:func:`~lasagne_caption.data.dataset.write_dataset`.
"""
import json
import os
import pathlib

import numpy as np

from ..errors import UserError
from .archives import copy_to_file, extract
from .dataset import (CAPTIONS, CODES, NAMES, SPLITS, QuantizedCodesWriter, default_splits,
                      load_dataset, write_dataset)
from .output import DatasetOutput
from .readers import _warn, read_codes, read_coco, read_flickr8k_captions, read_lines

FLICKR_SPLITS = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
                 "test": "Flickr_8k.testImages.txt"}
FLICKR_FEATURES = {"logits": "mobilenet_v2_logits.npy", "pool": "mobilenet_v2_pool.npy"}
# spatial MobileNetV2 taps, encoded from the photos and stored as uint8 -> the tensor they are
GRID_FEATURES = ("grid", "block16")
GRID_TENSORS = {"grid": "Conv_1", "block16": "expanded_conv_16/project"}


def encode_images(paths, features="logits", model_path=None):
    """Codes for photos, from ``lasagne_caption.encoders`` when it is installed.

    Parameters
    ----------
    paths : list of path
        Photo files.
    features : str
        Which code of the encoder (``logits`` or ``pool`` for MobileNetV2).
    model_path : str, optional
        MobileNetV2 ``.tflite`` file (default: the encoders' cache location).

    Returns
    -------
    codes : numpy.ndarray
        float32 [M, D], one row per photo that could be read.
    names : list of str
        Base names of those photos, in row order (unreadable ones are left out).
    """
    try:
        from ..encoders import encode_folder, get_encoder
    except ImportError:
        raise UserError("%d photos need codes, but there is no image encoder yet; "
                        "use precomputed codes (Flickr8k codes/, COCO --codes/--names)" % len(paths))
    encoder = get_encoder("mobilenet_v2", model_path)
    codes, names, _failed = encode_folder([os.fspath(p) for p in paths], encoder=encoder,
                                          features=features)
    return codes, names


def _check_splits(splits, where):
    """A dataset needs train and val images; an empty test split is only a warning."""
    for name in ("train", "val"):
        if not len(splits.get(name, ())):
            raise UserError("%s: the %s split would have no images; a dataset needs train and "
                            "val images" % (where, name))
    if not len(splits.get("test", ())):
        _warn("%s: the test split has no images" % where)


def _save(output, codes, captions, names, splits, source, features, where):
    """Check the splits, then write the dataset into ``output`` (its staging folder)."""
    _check_splits(splits, where)
    with output.staging() as tmp:
        write_dataset(tmp, codes, captions, names, splits, source, features)
    return pathlib.Path(output.given)


def prepare_flickr8k(source, out_dir, features="logits", force=False, model_path=None,
                     batch_size=32):
    """Make a dataset from a Flickr8k folder with the official split (dev -> val).

    Images without codes (in ``codes/``) or without captions are dropped with
    a warning. Without ``codes/``, the photos in ``images/`` go to
    :func:`encode_images` (MobileNetV2 from ``model_path``). A split list that
    names an image found neither in the captions nor in the codes, or a
    train or val split left without images, is an error.

    ``features="grid"``: MobileNetV2's 7x7x1280 ``Conv_1`` map of every
    captioned photo in ``images/`` (there are no precomputed grids), encoded
    ``batch_size`` photos at a time and stored as uint8 [N, 49, 1280] with the
    model's own scale and zero point of that tensor (:func:`prepare_grid`).
    ``features="block16"``: the same for the 7x7x320 output of the last
    inverted-residual block (``expanded_conv_16/project``, Conv_1's input),
    uint8 [N, 49, 320], for a network that trains MobileNetV2's head
    (Conv_1, the pooling, the logits) itself. ``dataset.json`` records the
    features as ``"mobilenet_v2_" + features`` (the encoder and its tap).

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    source = pathlib.Path(source)
    if features not in FLICKR_FEATURES and features not in GRID_FEATURES:
        raise UserError("unknown features %r (valid: %s)"
                        % (features, ", ".join(list(FLICKR_FEATURES) + list(GRID_FEATURES))))
    with DatasetOutput(out_dir, force, [source, model_path]) as output:
        captions = read_flickr8k_captions(source / "Flickr8k.token.txt")
        split_lines = {s: read_lines(source / f) for s, f in FLICKR_SPLITS.items()}
        if features in GRID_FEATURES:
            return prepare_grid(output, source, captions, split_lines, features, model_path,
                                batch_size)
        if (source / "codes").is_dir():
            code_names = [line for _, line in read_lines(source / "codes" / NAMES)]
            codes = read_codes(source / "codes" / FLICKR_FEATURES[features])
            if len(codes) != len(code_names):
                raise UserError("%s: %d rows but %s has %d names" % (
                    source / "codes" / FLICKR_FEATURES[features], len(codes), NAMES, len(code_names)))
        elif (source / "images").is_dir():
            codes, code_names = encode_images(sorted((source / "images").glob("*.jpg")), features,
                                              model_path)
        else:
            raise UserError("%s: neither codes/ nor images/ found" % source)
        row_of = {n: i for i, n in enumerate(code_names)}
        if len(row_of) != len(code_names):
            raise UserError("%s: repeated image names" % (source / "codes" / NAMES))
        names, splits = _flickr8k_rows(source, captions, split_lines, code_names,
                                       "codes", "the codes")
        return _save(output, codes[[row_of[n] for n in names]],
                     [captions[n] for n in names], names, splits,
                     "flickr8k", "mobilenet_v2_" + features,
                     "%s (its Flickr_8k.*Images.txt lists)" % source)


def _flickr8k_rows(source, captions, split_lines, code_names, lack, where):
    """``(names, splits)``: the images with codes and captions, in code order, and the
    official splits as row indices. Images without either are dropped with a warning;
    a split list naming an image in neither is an error."""
    names = [n for n in code_names if n in captions]
    if not names:
        raise UserError("%s: no caption ids match the %s' image names"
                        % (source / "Flickr8k.token.txt", lack))
    known = set(code_names)
    dropped = sorted(set(captions) - set(names)) + sorted(known - set(captions))
    if dropped:
        _warn("%s: dropped %d images that lack %s or captions (%s)"
              % (source, len(dropped), lack, ", ".join(dropped[:3])))
    for split, lines in split_lines.items():
        for n, name in lines:
            if name not in captions and name not in known:
                raise UserError("%s:%d: image %s is in neither Flickr8k.token.txt nor %s"
                                % (source / FLICKR_SPLITS[split], n, name, where))
    new_row = {n: i for i, n in enumerate(names)}
    splits = {s: np.array(sorted({new_row[name] for _, name in split_lines[s] if name in new_row}),
                          dtype="int64") for s in SPLITS}
    if len(set().union(*map(set, splits.values()))) != sum(map(len, splits.values())):
        raise UserError("%s: the train/dev/test image lists overlap" % source)
    return names, splits


def grid_quantization(model_path, tap="grid"):
    """``(scale, zero_point)`` of the uint8 tensor behind a MobileNetV2 spatial tap, from the
    ``.tflite`` file: ``grid`` is ``Conv_1``'s output, ``block16`` that of
    ``expanded_conv_16/project``."""
    from ..encoders.mobilenet_v2 import read_tflite_weights
    scope = GRID_TENSORS[tap]
    _params, out_quant, _input = read_tflite_weights(model_path)
    if scope not in out_quant:
        raise UserError("%s: the output of %s is not quantised; cannot store %s codes as uint8"
                        % (model_path, scope, tap))
    return out_quant[scope]


def prepare_grid(output, source, captions, split_lines, tap="grid", model_path=None,
                 batch_size=32, progress=True):
    """Encode the captioned photos of ``source/images`` into uint8 grid codes (Flickr8k).

    The splits are checked before anything is encoded. Photos go through
    MobileNetV2 ``batch_size`` at a time; each batch's float32 map is
    quantised with the model's scale / zero point of that tensor
    (:func:`grid_quantization`) and written into ``image_codes.npy`` of the
    staging folder, a :class:`~lasagne_caption.data.dataset.QuantizedCodesWriter`,
    so memory stays bounded. Unreadable photos are skipped with a warning.
    """
    images = source / "images"
    if not images.is_dir():
        raise UserError("%s: no images/ folder; %s features are encoded from the photos "
                        "(there are no precomputed ones)" % (source, tap))
    photo_names = sorted(p.name for p in images.glob("*.jpg"))
    names, splits = _flickr8k_rows(source, captions, split_lines, photo_names,
                                   "photos", "images/")
    where = "%s (its Flickr_8k.*Images.txt lists)" % source
    _check_splits(splits, where)
    try:
        from ..encoders import get_encoder
    except ImportError:
        raise UserError("%d photos need codes, but there is no image encoder yet" % len(names))
    from tqdm import tqdm
    encoder = get_encoder("mobilenet_v2", model_path)
    scale, zero_point = grid_quantization(encoder.model_path, tap)
    shape = tuple(encoder.tap_shapes[tap])
    paths = [os.fspath(images / n) for n in names]
    kept = []
    with output.staging() as tmp:
        writer = QuantizedCodesWriter(tmp / CODES, len(paths), (shape[0] * shape[1], shape[2]),
                                      scale, zero_point, grid_shape=shape)
        try:
            with tqdm(total=len(paths), disable=not progress, desc="encoding photos",
                      unit="img") as bar:
                for start in range(0, len(paths), batch_size):
                    chunk = paths[start:start + batch_size]
                    result = encoder.encode(chunk, taps=tap, batch_size=batch_size,
                                            progress=False, skip_unreadable=True)
                    for _, path, message in result.failed:
                        _warn("skipping %s" % message)
                    writer.append(result[tap])
                    kept.extend(start + i for i in result.kept)
                    bar.update(len(chunk))
        finally:
            writer.close()
        if len(kept) < len(names):
            if not kept:
                raise UserError("%s: none of the photos could be read" % images)
            old_names, names = names, [names[i] for i in kept]
            new_row = {n: i for i, n in enumerate(names)}
            splits = {s: np.array([new_row[old_names[i]] for i in ix if old_names[i] in new_row],
                                  dtype="int64") for s, ix in splits.items()}
            _check_splits(splits, where)
        write_dataset(tmp, range(len(names)), [captions[n] for n in names], names,
                      splits, "flickr8k", "mobilenet_v2_" + tap, codes_meta=writer.meta())
    return pathlib.Path(output.given)


def prepare_coco(json_path, out_dir, codes=None, names=None, force=False):
    """Make a dataset from an MS-COCO captions JSON and precomputed codes.

    Parameters
    ----------
    codes : path
        ``.npy`` float [M, D]. Without ``names`` its rows follow the JSON's
        ``images`` order (all images, captioned or not).
    names : path, optional
        One image per row of ``codes``: the COCO file name or numeric id.
        Images without a code are dropped with a warning.

    The split is :func:`~lasagne_caption.data.dataset.default_splits` (COCO
    files carry none).
    """
    if codes is None:
        raise UserError("%s: COCO photos need codes: pass --codes FILE.npy --names FILE.txt "
                        "(encoding COCO photos is not supported yet)" % json_path)
    with DatasetOutput(out_dir, force, [json_path, codes, names]) as output:
        ids, files, captions = read_coco(json_path)
        code_array = read_codes(codes)
        if names is None:
            with open(json_path, encoding="utf-8") as f:
                all_ids = [img["id"] for img in json.load(f)["images"]]
            if len(all_ids) != len(code_array):
                raise UserError("%s: %d rows but %s has %d images (pass --names)"
                                % (codes, len(code_array), json_path, len(all_ids)))
            code_keys = [str(i) for i in all_ids]
        else:
            code_keys = [line for _, line in read_lines(names)]
            if len(code_keys) != len(code_array):
                raise UserError("%s: %d names for %d rows of %s" % (names, len(code_keys), len(code_array), codes))
        row_of = {k: i for i, k in enumerate(code_keys)}
        if len(row_of) != len(code_keys):
            raise UserError("%s: repeated image names" % (names or json_path))
        rows = [row_of.get(f, row_of.get(str(i))) for i, f in zip(ids, files)]
        keep = [j for j, r in enumerate(rows) if r is not None]
        if not keep:
            raise UserError("%s: none of its image ids match the names of %s" % (json_path, codes))
        if len(keep) < len(ids):
            _warn("%s: dropped %d images without codes" % (json_path, len(ids) - len(keep)))
        return _save(output, code_array[[rows[j] for j in keep]],
                     [captions[j] for j in keep], [files[j] for j in keep],
                     default_splits(len(keep)), "coco", str(codes),
                     "%s (%d images with codes)" % (json_path, len(keep)))


def prepare_seminar(source, out_dir, force=False):
    """Make a dataset from the seminar's ``data.tar.gz`` or its unpacked folder.

    Only the two data files (and, from a folder, ``image_names.txt``) are
    taken, byte for byte; from an archive they are streamed to names we
    choose by :func:`~lasagne_caption.data.archives.extract`, which refuses an
    archive with absolute or ``..`` member names. The split is the folder's
    ``splits.json`` or :func:`~lasagne_caption.data.dataset.default_splits`.
    """
    source = pathlib.Path(source)
    with DatasetOutput(out_dir, force, [source]) as output:
        if source.is_dir():
            dataset = load_dataset(source)  # check first, so errors name the user's files
            _check_splits(dataset.splits, source)
        with output.staging() as tmp:
            if source.is_dir():
                for name in (CODES, CAPTIONS, NAMES):
                    if (source / name).exists():
                        with open(source / name, "rb") as f:
                            copy_to_file(f, tmp / name, (source / name).stat().st_size, name)
            else:
                extract(source, "tar", tmp, lambda name: name in (CODES, CAPTIONS), source.name,
                        required=(CODES, CAPTIONS), part_files=False)
                try:
                    dataset = load_dataset(tmp)
                except UserError as exc:  # name the archive, not our temporary folder
                    raise UserError(str(exc).replace(str(tmp), str(source))) from None
                _check_splits(dataset.splits, source)
            write_dataset(tmp, dataset.codes, dataset.captions, dataset.image_names,
                          dataset.splits, "seminar", "googlenet", data_copied=True)
        return pathlib.Path(output.given)
