"""Random training batches and the walk over every caption."""
import numpy as np

from lasagne_caption.data.batches import generate_batch, iterate_captions
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
