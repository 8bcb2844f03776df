"""Word vectors for the embedding layer (GloVe text files)."""
import numpy as np

from ..errors import UserError


def read_glove(path, vocab, dim=None):
    """Embedding matrix (len(vocab), dim) from a GloVe text file.

    Words missing from the file keep a small random vector. Returns the
    matrix and the number of vocabulary words found in the file.
    """
    vectors = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                parts = line.rstrip().split(" ")
                if len(parts) < 2:
                    continue
                try:
                    vec = np.asarray(parts[1:], dtype="float32")
                except ValueError:
                    raise UserError("%s: line %d is not 'word float float ...'" % (path, line_no))
                if dim is None:
                    dim = len(vec)
                if len(vec) != dim:
                    raise UserError("%s: line %d has %d numbers, expected %d"
                                    % (path, line_no, len(vec), dim))
                if parts[0] in vocab.index:
                    vectors[parts[0]] = vec
    except FileNotFoundError:
        raise UserError("%s: GloVe file not found" % path)
    except UnicodeDecodeError as exc:
        raise UserError("%s: not UTF-8 text (%s)" % (path, exc.reason))
    if dim is None:
        raise UserError("%s: no word vectors in the file" % path)
    rng = np.random.RandomState(0)
    matrix = rng.normal(0, 0.1, (len(vocab), dim)).astype("float32")
    for word, vec in vectors.items():
        matrix[vocab.index[word]] = vec
    return matrix, len(vectors)
