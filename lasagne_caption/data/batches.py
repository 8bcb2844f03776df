"""Batches for training and evaluation: codes and caption index matrices.

Both take one split's ``(codes, captions)``
(:meth:`~lasagne_caption.data.dataset.CaptionDataset.split`) and a
:class:`~lasagne_caption.vocab.Vocabulary`: :func:`generate_batch` draws a
random batch, as the seminar does; :func:`iterate_captions` walks every
(image, caption) pair once.

>>> import numpy as np
>>> from lasagne_caption.vocab import END, START, Vocabulary
>>> captions = [[[START, "a", "dog", END]], [[START, "a", "cat", END], [START, "cat", END]]]
>>> vocab = Vocabulary.build([c for image in captions for c in image], min_count=1)
>>> vocab.words
['#UNK#', '#START#', '#END#', 'a', 'cat', 'dog']
>>> codes = np.array([[1, 0], [0, 1]], dtype="float32")
>>> images, matrix = generate_batch(codes, captions, vocab, 3, np.random.RandomState(0))
>>> images.tolist()
[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
>>> matrix            # #START# a dog #END#, #START# a cat #END#, #START# cat #END# and padding
array([[ 1,  3,  5,  2],
       [ 1,  3,  4,  2],
       [ 1,  4,  2, -1]], dtype=int32)
>>> for images, matrix in iterate_captions(codes, captions, vocab, batch_size=2):
...     print(images.tolist(), matrix.tolist())
[[1.0, 0.0], [0.0, 1.0]] [[1, 3, 5, 2], [1, 3, 4, 2]]
[[0.0, 1.0]] [[1, 4, 2]]
"""
import numpy as np


def generate_batch(codes, captions, vocab, batch_size, rng, max_caption_len=None):
    """A random training batch, as in the seminar: random images, one random caption each.

    Parameters
    ----------
    codes : numpy.ndarray
        [N, D] codes of one split.
    captions : list of list of list of str
        The N images' tokenized captions.
    vocab : Vocabulary
    batch_size : int
    rng : numpy.random.Generator or numpy.random.RandomState
        Seed it for a reproducible stream of batches.
    max_caption_len : int, optional

    Returns
    -------
    images : float32 [batch_size, D]
    matrix : int32 [batch_size, T]
    """
    draw = getattr(rng, "integers", None) or rng.randint
    images = draw(0, len(codes), size=batch_size)
    chosen = [captions[i][draw(0, len(captions[i]))] for i in images]
    return (np.asarray(codes[images], dtype="float32"),
            vocab.as_matrix(chosen, max_len=max_caption_len))


def iterate_captions(codes, captions, vocab, batch_size, max_caption_len=None):
    """Every (image, caption) pair exactly once, in order, in batches.

    Yields
    ------
    images : float32 [B, D]
        One row per caption (an image repeats for each of its captions).
    matrix : int32 [B, T]
        B = batch_size except for the last batch.
    """
    pairs = [(i, c) for i, entry in enumerate(captions) for c in entry]
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        yield (np.asarray(codes[[i for i, _ in chunk]], dtype="float32"),
               vocab.as_matrix([c for _, c in chunk], max_len=max_caption_len))


def epoch_batches(codes, captions, vocab, batch_size, rng, max_caption_len=None, window=20):
    """Every (image, caption) pair once, shuffled, in batches of similar lengths.

    The pairs are shuffled, cut into windows of ``window`` batches, sorted by
    length inside each window and cut into batches, whose order is shuffled
    again: a batch pads its captions to its longest, so similar lengths
    waste fewer steps, while every epoch still sees a new order.

    Yields ``(images float32 [B, ...], matrix int32 [B, T])`` as
    :func:`iterate_captions`; ``len(list(...))`` is ``ceil(pairs / batch_size)``.

    >>> import numpy as np
    >>> from lasagne_caption.vocab import END, START, Vocabulary
    >>> captions = [[[START, "a", END], [START, "a", "b", "c", END]], [[START, "b", END]]]
    >>> vocab = Vocabulary.build([c for image in captions for c in image], min_count=1)
    >>> codes = np.eye(2, dtype="float32")
    >>> batches = list(epoch_batches(codes, captions, vocab, 2, np.random.default_rng(0)))
    >>> sorted(m.shape[1] for _, m in batches)    # the two short captions together
    [3, 5]
    """
    pairs = [(i, j) for i, entry in enumerate(captions) for j in range(len(entry))]
    order = rng.permutation(len(pairs))
    lengths = [len(captions[i][j]) for i, j in pairs]
    chunks = []
    span = batch_size * window
    for start in range(0, len(order), span):
        part = sorted(order[start:start + span], key=lambda k: lengths[k])
        chunks += [part[b:b + batch_size] for b in range(0, len(part), batch_size)]
    for c in rng.permutation(len(chunks)):
        chosen = [pairs[k] for k in chunks[c]]
        yield (np.asarray(codes[[i for i, _ in chosen]], dtype="float32"),
               vocab.as_matrix([captions[i][j] for i, j in chosen], max_len=max_caption_len))
