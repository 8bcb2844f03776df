"""Random training batches, the walk over every caption and the shuffled epoch."""
import numpy as np
import pytest

from lasagne_caption.data.batches import epoch_batches, generate_batch, iterate_captions
from lasagne_caption.data.dataset import load_dataset
from lasagne_caption.vocab import Vocabulary
from tests.data.helpers import all_tokens, seminar_folder


def test_generate_batch_is_seeded(flickr):
    codes, captions = flickr.split("train")
    vocab = flickr.vocabulary()
    b1 = generate_batch(codes, captions, vocab, 32, np.random.default_rng(7))
    b2 = generate_batch(codes, captions, vocab, 32, np.random.default_rng(7))
    b3 = generate_batch(codes, captions, vocab, 32, np.random.RandomState(7), max_caption_len=5)
    assert b1[0].dtype == np.float32 and b1[0].shape == (32, 1001)
    assert b1[1].dtype == np.int32 and (b1[1][:, 0] == vocab.start_ix).all()
    assert all(np.array_equal(x, y) for x, y in zip(b1, b2))
    assert b3[1].shape == (32, 5)


def test_iterate_captions_covers_each_caption_once(tmp_path):
    ds = load_dataset(seminar_folder(tmp_path / "ds"))
    vocab = Vocabulary.build(all_tokens(ds), 1)
    batches = list(iterate_captions(ds.codes, ds.captions, vocab, batch_size=5))
    assert [len(m) for _, m in batches] == [5, 5, 2]
    decoded = [vocab.decode(row) for _, m in batches for row in m]
    assert decoded == [" ".join(c[1:-1]) for c in all_tokens(ds)]


# -- epoch_batches: every caption once per epoch, shuffled, similar lengths together --
def _epoch_data(n_images=11, seed=0):
    """Image i has 1 + i % 4 captions of different lengths; codes are one-hot rows."""
    rng = np.random.RandomState(seed)
    words = ["a", "b", "c", "d", "e", "f"]
    captions = [[["#START#"] + list(rng.choice(words, 1 + rng.randint(7))) + ["#END#"]
                 for _ in range(1 + i % 4)] for i in range(n_images)]
    vocab = Vocabulary.build([c for entry in captions for c in entry], 1)
    return np.eye(n_images, dtype="float32"), captions, vocab


def _pairs(batches, vocab):
    """(image, caption text) of every row, in order."""
    return [(int(img.argmax()), vocab.decode(row)) for images, m in batches
            for img, row in zip(images, m)]


@pytest.mark.parametrize("batch_size, window", [(4, 20), (3, 2), (1, 5), (50, 1)])
def test_epoch_batches_cover_every_pair_once(batch_size, window):
    codes, captions, vocab = _epoch_data()
    batches = list(epoch_batches(codes, captions, vocab, batch_size, np.random.default_rng(1),
                                 window=window))
    everything = sorted((i, " ".join(c[1:-1])) for i, entry in enumerate(captions)
                        for c in entry)
    assert len(everything) == 26
    assert sorted(_pairs(batches, vocab)) == everything
    sizes = [len(m) for _, m in batches]
    assert len(batches) == -(-26 // batch_size)
    assert sum(sizes) == 26 and max(sizes) <= batch_size
    assert sum(s < batch_size for s in sizes) == (26 % batch_size > 0)   # one short batch at most
    for images, m in batches:
        assert images.dtype == np.float32 and m.dtype == np.int32 and len(images) == len(m)
        assert (m[:, 0] == vocab.start_ix).all()
        # padded to the batch's longest caption, no wider
        assert (m[:, -1] != -1).any()


def test_epoch_batches_group_similar_lengths():
    codes, captions, vocab = _epoch_data(n_images=40)
    batches = list(epoch_batches(codes, captions, vocab, 5, np.random.default_rng(2),
                                 window=1000))
    # one window: sorted by length, then cut, so batches do not overlap in length
    spans = sorted(((m != -1).sum(axis=1).min(), (m != -1).sum(axis=1).max())
                   for _, m in batches)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:]))
    padding = sum(int((m == -1).sum()) for _, m in batches)
    random_order = sum(int((m == -1).sum()) for _, m in
                       iterate_captions(codes, captions, vocab, batch_size=5))
    assert padding < random_order / 2


def test_epoch_batches_are_seeded_and_each_epoch_has_its_own_order():
    from lasagne_caption.train import epoch_rngs
    codes, captions, vocab = _epoch_data()

    def epoch(e, seed=0):
        rng, _ = epoch_rngs(seed, e)
        return list(epoch_batches(codes, captions, vocab, 4, rng))

    first, again = epoch(1), epoch(1)
    assert len(first) == len(again)
    for (i1, m1), (i2, m2) in zip(first, again):
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(m1, m2)
    orders = [_pairs(epoch(e), vocab) for e in (1, 2, 3)] + [_pairs(epoch(1, seed=1), vocab)]
    assert all(sorted(o) == sorted(orders[0]) for o in orders)
    assert len({tuple(o) for o in orders}) == len(orders)
    # a RandomState serves as well as a Generator
    legacy = list(epoch_batches(codes, captions, vocab, 4, np.random.RandomState(0)))
    assert sorted(_pairs(legacy, vocab)) == sorted(orders[0])


def test_epoch_batches_of_grid_codes_and_truncated_captions():
    codes, captions, vocab = _epoch_data()
    grid = np.repeat(codes[:, None, :], 3, axis=1)            # (N, 3 regions, N)
    batches = list(epoch_batches(grid, captions, vocab, 4, np.random.default_rng(0),
                                 max_caption_len=4))
    assert all(images.shape[1:] == (3, 11) for images, _ in batches)
    assert max(m.shape[1] for _, m in batches) == 4
    assert sum(len(m) for _, m in batches) == 26
