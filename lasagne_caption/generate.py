"""Captions from image codes, one LSTM/GRU step per word.

The seminar generated a caption by running the whole network on the growing
prefix ``#START# w1 ... wt`` for every new word: quadratic in the caption
length, one image at a time. :class:`CaptionGenerator` drives a network
through its inference interface instead (:mod:`lasagne_caption.models.base`):

* ``model.feed_image(codes) -> states``: the state before ``#START#``;
* ``model.inference_step(words, states) -> (log_probs, states, extras)``:
  feed one word per row and get the next-word log-probabilities over the
  vocabulary, and whatever the network reports about the step (``extras``:
  attention weights, a gate value).

Greedy decoding, sampling and beam search all run on many images at once
(one row per image, per sample or per beam) and carry the states along, so
every new word costs one recurrent step. With ``extras=True`` they also
return, for every caption, the extras of each of its words. :func:`generate_by_prefix` is the
seminar's method, kept as the reference for tests and the benchmark.

Conventions shared by every decoder:

* decoding starts from ``#START#`` (the seminar fed ``"START"``, a word not
  in the vocabulary, i.e. ``#UNK#``);
* at most ``max_len`` tokens are generated per caption, ``#END#`` included;
  a caption that reaches ``max_len`` without ``#END#`` is cut there;
* ``#START#`` is never generated, and with ``suppress_unk=True`` (default)
  neither is ``#UNK#``, which a user never wants to read;
* the returned log-probability is the model's: the sum of ``log p(word)``
  over the generated tokens, ``#END#`` included, from the unmodified
  distribution (suppression and temperature change which word is picked,
  not how it is scored).
"""
import math
import numbers

import numpy as np

from .errors import UserError

DEFAULT_BATCH_SIZE = 256


def _whole(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UserError("%s must be a whole number of at least %d, not %r" % (name, minimum, value))
    return int(value)


def _real(name, value, positive):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise UserError("%s must be a finite number %s 0, not %r"
                        % (name, ">" if positive else ">=", value))
    return float(value)


def check_options(beam=None, temperature=None, n=None, max_len=None,
                  length_normalization=None, seed=None):
    """Check decoding options; a :class:`UserError` naming the option if one is invalid.

    ``beam``, ``n`` and ``max_len`` are whole numbers >= 1, ``temperature`` a
    finite number > 0, ``length_normalization`` a finite number >= 0,
    ``seed`` None or a whole number >= 0. Options left at None are not checked.
    Messages use the command-line spelling (``--temperature``).
    """
    if beam is not None:
        _whole("--beam", beam, 1)
    if n is not None:
        _whole("-n", n, 1)
    if max_len is not None:
        _whole("--max-len", max_len, 1)
    if temperature is not None:
        _real("--temperature", temperature, positive=True)
    if length_normalization is not None:
        _real("--length-normalization", length_normalization, positive=False)
    if seed is not None:
        _whole("--seed", seed, 0)


def _check_finite(log_probs):
    if np.isnan(log_probs).any():
        raise UserError("the model produced NaN probabilities: its parameters are not finite")


class CaptionGenerator(object):
    """Greedy decoding, sampling and beam search over a network's inference interface.

    Parameters
    ----------
    model : a :class:`~lasagne_caption.models.base.CaptionNetwork`
        Its current parameters are used (shared variables: later changes to
        the model's weights are seen without recompiling).
    batch_size : int
        Images decoded together; bounds memory (beam search keeps
        ``batch_size * beam`` rows of vocabulary-sized arrays).

    Examples
    --------
    >>> gen = CaptionGenerator(model)                          # doctest: +SKIP
    >>> captions, log_probs = gen.beam_search(codes, beam=3)   # doctest: +SKIP
    """

    def __init__(self, model, batch_size=DEFAULT_BATCH_SIZE):
        self.model = model
        self.vocab = model.vocab
        self.batch_size = batch_size

    # -- the network's interface --------------------------------------------
    def initial_states(self, codes):
        """The network's states before ``#START#`` is fed (one row per image)."""
        return self.model.feed_image(codes)

    def step(self, words, states):
        """Feed ``words`` (int (N,)): ``(log_probs (N, n_tokens), new states, extras)``.

        Raises :class:`UserError` if the model gives NaN (non-finite parameters).
        """
        log_probs, states, extras = self.model.inference_step(words, states)
        _check_finite(log_probs)
        return log_probs, states, extras

    # -- decoders ---------------------------------------------------------
    def greedy(self, codes, max_len=20, suppress_unk=True, extras=False, progress=False):
        """The most probable word at every step.

        Parameters
        ----------
        codes : array (N,) + model.image_shape
        max_len : int
        suppress_unk : bool
        extras : bool
            Also return what the network reported about each word.
        progress : bool
            A progress bar on stderr, counting images (all decoders take it).

        Returns
        -------
        captions : list of str
        log_probs : float64 array (N,)
        extras : list of dict, only with ``extras=True``
            For each caption, ``{name: array (words,) + shape}``: the
            network's extras of every generated token, ``#END#`` included
            (``{}`` for a network that reports none).
        """
        check_options(max_len=max_len)
        return self._chunked(self._greedy, codes, extras, progress, max_len=max_len,
                             suppress_unk=suppress_unk)

    def sample(self, codes, temperature=1.0, n=1, seed=None, max_len=20, suppress_unk=True,
               extras=False, progress=False):
        """Draw ``n`` captions per image from the model, softmax at ``temperature``.

        The same ``seed`` (and the same inputs) gives the same captions.

        Returns
        -------
        captions : list of list of str
            ``n`` captions for each of the N images.
        log_probs : float64 array (N, n)
        extras : list of list of dict, only with ``extras=True``
            As for :meth:`greedy`, ``n`` per image.
        """
        check_options(temperature=temperature, n=n, max_len=max_len, seed=seed)
        rng = np.random.default_rng(seed)
        codes = np.repeat(np.asarray(codes, dtype="float32"), n, axis=0)
        out = self._chunked(self._sample, codes, extras, progress, rng=rng,
                            temperature=temperature,
                            max_len=max_len, suppress_unk=suppress_unk)
        groups = [[items[i:i + n] for i in range(0, len(items), n)] for items in out[::2]]
        result = (groups[0], out[1].reshape(-1, n))
        return result + (groups[1],) if extras else result

    def beam_search(self, codes, beam=3, max_len=20, length_normalization=0.0,
                    suppress_unk=True, extras=False, progress=False):
        """The best caption among ``beam`` hypotheses kept per image and step.

        Finished hypotheses (ending in ``#END#``) stay in the beam with their
        score and compete with the unfinished ones. The greedy caption is
        carried along as one more hypothesis (plain beam search can prune it
        and end lower), so the result never scores below :meth:`greedy`.
        Among the final hypotheses the caption with the highest ``log_prob / length ** length_normalization``
        is returned (length in tokens, ``#END#`` included): 0 compares raw
        log-probabilities, which favour short captions; 0.7 is a common choice.

        Returns
        -------
        captions : list of str
        log_probs : float64 array (N,)
            The raw (not length-normalised) log-probability of each caption.
        extras : list of dict, only with ``extras=True``
            As for :meth:`greedy`: the extras of the chosen hypothesis.
        """
        check_options(beam=beam, max_len=max_len, length_normalization=length_normalization)
        return self._chunked(self._beam_search, codes, extras, progress, beam=beam,
                             max_len=max_len, alpha=length_normalization,
                             suppress_unk=suppress_unk)

    # -- implementation -----------------------------------------------------
    def _chunked(self, decode, codes, extras, progress, **kwargs):
        from tqdm import tqdm
        codes = self.model.check_images(codes)
        captions, log_probs, notes = [], [], []
        with tqdm(total=len(codes), desc="captioning", unit="img", disable=not progress) as bar:
            for start in range(0, len(codes), self.batch_size):
                c, lp, x = decode(codes[start:start + self.batch_size], **kwargs)
                captions += c
                log_probs.append(lp)
                notes += x
                bar.update(len(c))
        result = (captions, np.concatenate(log_probs) if log_probs else np.zeros(0))
        return result + (notes,) if extras else result

    def _banned(self, suppress_unk):
        return [self.vocab.start_ix] + ([self.vocab.unk_ix] if suppress_unk else [])

    def _greedy(self, codes, max_len, suppress_unk):
        return self._decode_rowwise(codes, max_len, suppress_unk,
                                    pick=lambda scores: scores.argmax(axis=1))

    def _sample(self, codes, rng, temperature, max_len, suppress_unk):
        def pick(scores):
            # subtract the best score before dividing: no inf - inf at tiny
            # temperatures; banned words (-inf) get probability exactly 0
            scores = scores.astype(np.float64)   # float32 would round 1e-300 to 0
            with np.errstate(over="ignore", under="ignore"):
                p = np.exp((scores - scores.max(axis=1, keepdims=True)) / temperature)
            cdf = np.cumsum(p, axis=1)
            cdf /= cdf[:, -1:]          # the last entry is exactly 1
            # inverse-CDF draw, one uniform number in (0, 1) per row (vectorised
            # rng.choice): the first word whose cdf reaches u, never one of probability 0
            u = np.maximum(rng.random((len(cdf), 1)), np.finfo(float).tiny)
            return np.minimum((cdf < u).sum(axis=1), cdf.shape[1] - 1)
        return self._decode_rowwise(codes, max_len, suppress_unk, pick)

    def _decode_rowwise(self, codes, max_len, suppress_unk, pick):
        """One independent caption per row: greedy or sampled, by ``pick(scores) -> words``."""
        n = len(codes)
        end = self.vocab.end_ix
        states = self.initial_states(codes)
        words = np.full(n, self.vocab.start_ix, dtype="int32")
        tokens = np.full((n, max_len), end, dtype="int32")
        total = np.zeros(n)
        done = np.zeros(n, dtype=bool)
        lengths = np.zeros(n, dtype=int)
        history = []
        for t in range(max_len):
            log_probs, states, extras = self.step(words, states)
            scores = log_probs.copy()
            scores[:, self._banned(suppress_unk)] = -np.inf
            words = np.where(done, end, pick(scores)).astype("int32")
            total += np.where(done, 0.0, log_probs[np.arange(n), words])
            tokens[:, t] = words
            lengths += ~done
            history.append(extras)
            done |= words == end
            if done.all():
                break
        return ([self.vocab.decode(row) for row in tokens], total,
                _per_caption(history, np.arange(n), lengths))

    def _beam_search(self, codes, beam, max_len, alpha, suppress_unk):
        n, end = len(codes), self.vocab.end_ix
        # Plain beam search can prune the greedy path and end below it, so
        # each image gets one extra lane that follows the greedy path outside
        # the competition: the result never scores below greedy decoding.
        lanes = beam + 1
        # rows are image-major: row i * lanes + k is lane k of image i
        states = [np.repeat(s, lanes, axis=0) for s in self.initial_states(codes)]
        words = np.full(n * lanes, self.vocab.start_ix, dtype="int32")
        tokens = np.zeros((n * lanes, 0), dtype="int32")
        scores = np.zeros((n, lanes))
        scores[:, 1:beam] = -np.inf   # the beams start identical: expand only the first
        scores = scores.ravel()
        lengths = np.zeros(n * lanes, dtype=int)
        done = np.zeros(n * lanes, dtype=bool)
        rows = np.arange(n)[:, None]
        # the extras of every token of every hypothesis: {name: (rows, t) + shape}
        history = None
        for _ in range(max_len):
            log_probs, states, extras = self.step(words, states)
            log_probs[:, self._banned(suppress_unk)] = -np.inf
            # a finished hypothesis has one continuation, #END# at no cost
            log_probs[done] = -np.inf
            log_probs[done, end] = 0.0
            n_tokens = log_probs.shape[1]
            candidates = (scores[:, None] + log_probs).reshape(n, lanes * n_tokens)
            competing = candidates[:, :beam * n_tokens]
            best = np.argpartition(-competing, beam - 1, axis=1)[:, :beam]
            best = best[rows, np.argsort(-competing[rows, best], axis=1)]
            greedy = beam * n_tokens + candidates[:, beam * n_tokens:].argmax(axis=1)
            best = np.concatenate([best, greedy[:, None]], axis=1)
            source = (rows * lanes + best // n_tokens).ravel()
            words = (best % n_tokens).ravel().astype("int32")
            scores = candidates[rows, best].ravel()
            lengths = lengths[source] + ~done[source]
            done = done[source] | (words == end)
            tokens = np.concatenate([tokens[source], words[:, None]], axis=1)
            states = [s[source] for s in states]
            # the new token's extras are those of the step that scored it
            step_extras = {k: np.asarray(v)[source][:, None] for k, v in extras.items()}
            history = step_extras if history is None else {
                k: np.concatenate([history[k][source], v], axis=1)
                for k, v in step_extras.items()}
            if done.all():
                break
        normalised = (scores / np.maximum(lengths, 1) ** alpha).reshape(n, lanes)
        chosen = np.arange(n) * lanes + normalised.argmax(axis=1)
        notes = [{k: v[row, :lengths[row]] for k, v in (history or {}).items()}
                 for row in chosen]
        return [self.vocab.decode(row) for row in tokens[chosen]], scores[chosen], notes


def _per_caption(history, rows, lengths):
    """``[{name: (length,) + shape}]`` of ``rows`` from a list of per-step extras dicts."""
    names = history[0].keys() if history else ()
    return [{k: np.stack([np.asarray(step[k])[row] for step in history[:length]])
             for k in names} for row, length in zip(rows, lengths)]


def generate_by_prefix(model, codes, max_len=20, suppress_unk=True):
    """Greedy captions the seminar's way: re-run the whole network on the prefix.

    Quadratic in the caption length; the reference that :meth:`CaptionGenerator.greedy`
    must match word for word (same conventions, see the module docstring).

    Returns
    -------
    captions : list of str
    log_probs : float64 array (N,)
    """
    vocab = model.vocab
    codes = np.asarray(codes, dtype="float32")
    n = len(codes)
    prefix = np.full((n, 1), vocab.start_ix, dtype="int32")
    total = np.zeros(n)
    done = np.zeros(n, dtype=bool)
    banned = [vocab.start_ix] + ([vocab.unk_ix] if suppress_unk else [])
    for _ in range(max_len):
        # finished rows keep running (with #END# appended); their output is ignored
        probs = model.probabilities(codes, prefix)[:, -1].astype("float64")
        _check_finite(probs)
        scores = probs.copy()
        scores[:, banned] = -1.0
        words = np.where(done, vocab.end_ix, scores.argmax(axis=1)).astype("int32")
        total += np.where(done, 0.0, np.log(probs[np.arange(n), words]))
        prefix = np.concatenate([prefix, words[:, None]], axis=1)
        done |= words == vocab.end_ix
        if done.all():
            break
    return [vocab.decode(row) for row in prefix], total
