"""Caption metrics: the MS-COCO evaluation (``pycocoevalcap`` 1.2) made safe to call.

:func:`score_captions` returns BLEU-1..4, METEOR, ROUGE-L and CIDEr-D, computed
the way ``pycocoevalcap.eval.COCOEvalCap`` does: every caption goes through the
Stanford PTB tokenizer (lower-cased, punctuation removed) and then through each
scorer. Differences from calling ``pycocoevalcap`` directly:

* input mismatches raise :class:`~lasagne_caption.errors.UserError` instead of
  being skipped or tripping an ``assert``;
* the tokenizer's temporary file goes to the system temp folder, not beside its
  jar, so a read-only install works;
* the METEOR Java process is closed explicitly (:meth:`CaptionScorer.close`);
* without Java, captions are tokenised by :func:`simple_tokenize` and METEOR is
  skipped with a one-line log message; SPICE is always skipped (it downloads
  Stanford CoreNLP models at first use, which an offline machine cannot do).

Scores are on pycocoevalcap's scale (0..1; CIDEr-D 0..10); papers print them
x100, as :func:`format_table` does.
"""
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile

import pandas as pd
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer

from .errors import UserError
from .files import atomic_write

log = logging.getLogger(__name__)

METRICS = ("BLEU", "METEOR", "ROUGE_L", "CIDEr")
COLUMNS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D")

# Published Flickr8k test-split results, x100. Each paper used its own
# evaluation code, so a comparison with them is indicative only.
PUBLISHED_FLICKR8K = {
    "Karpathy & Fei-Fei 2015 (NeuralTalk, VGG)": {
        "BLEU-1": 57.9, "BLEU-2": 38.3, "BLEU-3": 24.5, "BLEU-4": 16.0,
        "METEOR": None, "ROUGE-L": None, "CIDEr-D": None},
    "Xu et al. 2015 soft attention (VGG conv)": {
        "BLEU-1": 67.0, "BLEU-2": 44.8, "BLEU-3": 29.9, "BLEU-4": 19.5,
        "METEOR": 18.93, "ROUGE-L": None, "CIDEr-D": None},
    "Xu et al. 2015 hard attention (VGG conv)": {
        "BLEU-1": 67.0, "BLEU-2": 45.7, "BLEU-3": 31.4, "BLEU-4": 21.3,
        "METEOR": 20.30, "ROUGE-L": None, "CIDEr-D": None},
}

_PTB_JAR = os.path.join(os.path.dirname(os.path.abspath(ptbtokenizer.__file__)),
                        ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
# The jar lower-cases *after* turning brackets into -LRB- etc., so these
# survive pycocoevalcap's (upper-case) punctuation filter; the fallback agrees.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-",
             "{": "-lcb-", "}": "-rcb-"}
_PUNCTUATION = set(ptbtokenizer.PUNCTUATIONS) | {'"'}
_TOKEN = re.compile(r"n't\b|'(?:s|re|ve|ll|d|m)\b|\d+(?:[.,]\d+)+"
                    r"|(?:mrs?|ms|dr|jr|sr|st)\.|\w(?:\.\w)+\.?"  # abbreviations
                    r"|\w+(?:[-./']\w+)*|\.\.\.|--|\S")


def simple_tokenize(caption):
    """Tokenise like pycocoevalcap's PTB tokenizer, in Python (no Java needed).

    Parameters
    ----------
    caption : str

    Returns
    -------
    str
        Lower-cased tokens joined by single spaces, with the tokens that
        pycocoevalcap drops (``. , ? ! : ; - -- ...`` and quotes) removed and
        clitics split off (``dog's`` -> ``dog 's``, ``don't`` -> ``do n't``).
        It agrees with the Java tokenizer on all but 5 of Flickr8k's 40460
        reference captions; it differs on a few abbreviations (``u.`` loses
        its period, ``AT&T`` is split), which the Java tokenizer recognises.
    """
    text = re.sub(r"\bcannot\b", "can not", caption.lower())
    text = re.sub(r"(\w)(n't)\b", r"\1 \2", text)
    text = re.sub(r"(\w)('(?:s|re|ve|ll|d|m))\b", r"\1 \2", text)
    tokens = (_BRACKETS.get(t, t) for t in _TOKEN.findall(text))
    return " ".join(t for t in tokens if t not in _PUNCTUATION)


def _ptb_tokenize(sentences):
    """Tokenise with pycocoevalcap's Stanford PTB tokenizer, one output per input."""
    # pycocoevalcap's PTBTokenizer writes its input file beside the jar, which
    # fails on a read-only install: same command, file in the temp folder.
    # Whitespace (newlines above all) is folded so one caption stays one line.
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write("\n".join(" ".join(s.split()) for s in sentences).encode())
    try:
        proc = subprocess.run(
            ["java", "-cp", _PTB_JAR, "edu.stanford.nlp.process.PTBTokenizer",
             "-preserveLines", "-lowerCase", f.name],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        os.remove(f.name)
    lines = proc.stdout.decode().split("\n")
    if proc.returncode or len(lines) < len(sentences):
        raise RuntimeError("the PTB tokenizer failed: %s"
                           % proc.stderr.decode().strip()[-500:])
    return [" ".join(w for w in line.rstrip().split(" ") if w not in _PUNCTUATION)
            for line in lines[:len(sentences)]]


class _Meteor(Meteor):
    """pycocoevalcap's METEOR with a :meth:`close` that cannot hang.

    The parent's ``__del__`` takes a lock that ``compute_score`` leaves held if
    it raises, so garbage collection could block forever; this one does not.
    """

    def close(self):
        proc = self.meteor_p
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()

    __del__ = close


def _few(keys):
    return ", ".join(repr(k) for k in keys[:3]) + (", ..." if len(keys) > 3 else "")


def check_captions(references, candidates):
    """Raise :class:`UserError` unless references and candidates pair up one to one.

    Parameters
    ----------
    references : dict
        Image key -> non-empty list of reference captions (str).
    candidates : dict
        Image key -> one generated caption (str; may be empty).
    """
    problems = [
        ("captioned image(s) are not in the references",
         [k for k in candidates if k not in references]),
        ("reference image(s) have no candidate caption",
         [k for k in references if k not in candidates]),
        ("image(s) have no reference captions (need a non-empty list of str)",
         [k for k, refs in references.items() if isinstance(refs, str) or not refs
          or not all(isinstance(r, str) for r in refs)]),
        ("candidate caption(s) are not a str",
         [k for k, c in candidates.items() if not isinstance(c, str)]),
    ]
    for what, keys in problems:
        if keys:
            raise UserError("%d %s, e.g. %s" % (len(keys), what, _few(keys)))
    if not candidates:
        raise UserError("no captions to score")


class CaptionScorer:
    """The COCO caption metrics, keeping one METEOR process across calls.

    Starting METEOR costs ~10 s of Java loading its paraphrase table, so reuse
    one scorer for many evaluations, and close it (or use ``with``) to end the
    Java process.

    Parameters
    ----------
    metrics : sequence of str
        Any of ``"BLEU"``, ``"METEOR"``, ``"ROUGE_L"``, ``"CIDEr"`` and
        ``"SPICE"``; SPICE, and METEOR without Java, are skipped with a log
        message.
    """

    def __init__(self, metrics=METRICS):
        unknown = [m for m in metrics if m not in METRICS + ("SPICE",)]
        if unknown:
            raise UserError("unknown metric(s) %s; choose from %s"
                            % (_few(unknown), ", ".join(METRICS)))
        self.java = shutil.which("java") is not None
        self.metrics = [m for m in metrics if m != "SPICE"]
        if "SPICE" in metrics:
            log.warning("SPICE skipped: it downloads Stanford CoreNLP models at "
                        "first use, which this offline setup cannot do")
        if "METEOR" in self.metrics and not self.java:
            log.warning("METEOR skipped: it needs Java and `java` is not on PATH")
            self.metrics.remove("METEOR")
        # Started now so that Java loads while the caller prepares captions.
        self._meteor = _Meteor() if "METEOR" in self.metrics else None

    def score(self, references, candidates):
        """Score candidates against references; see :func:`score_captions`."""
        check_captions(references, candidates)
        keys = list(candidates)
        sentences = [r for k in keys for r in references[k]] + [candidates[k] for k in keys]
        tokens = (_ptb_tokenize(sentences) if self.java
                  else [simple_tokenize(s) for s in sentences])
        # Integer keys: pycocoevalcap only needs both dicts to share them.
        gts, start = {}, 0
        for i, k in enumerate(keys):
            gts[i] = tokens[start:start + len(references[k])]
            start += len(references[k])
        res = {i: [t] for i, t in enumerate(tokens[start:])}

        scores = {}
        if "BLEU" in self.metrics:
            bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
            scores.update(("BLEU-%d" % (n + 1), float(b)) for n, b in enumerate(bleu))
        if self._meteor is not None:
            if self._meteor.meteor_p.poll() is not None:   # else readline() hangs
                raise RuntimeError("METEOR's Java process has ended (scorer closed, "
                                   "or Java failed: %s)" % self._meteor_stderr())
            scores["METEOR"] = float(self._meteor.compute_score(gts, res)[0])
        if "ROUGE_L" in self.metrics:
            scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
        if "CIDEr" in self.metrics:
            # pycocoevalcap's Cider is CIDEr-D: clipped n-gram counts and a
            # Gaussian length penalty (sigma 6), x10. Its idf comes from the
            # references scored, so one image alone always scores 0.
            scores["CIDEr-D"] = float(Cider().compute_score(gts, res)[0])
        return scores

    def _meteor_stderr(self):
        try:
            return self._meteor.meteor_p.stderr.read().decode().strip()[-300:]
        except ValueError:   # pipe already closed
            return "no message"

    def close(self):
        """End the METEOR Java process (safe to call twice)."""
        if self._meteor is not None:
            self._meteor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def score_captions(references, candidates, metrics=METRICS):
    """Score generated captions with the MS-COCO caption metrics.

    Parameters
    ----------
    references : dict
        Image key -> non-empty list of reference captions.
    candidates : dict
        Image key -> generated caption; exactly the keys of `references`.
    metrics : sequence of str
        Any of ``"BLEU"``, ``"METEOR"``, ``"ROUGE_L"``, ``"CIDEr"``
        (``"SPICE"`` is accepted and skipped).

    Returns
    -------
    dict of str to float
        Keys among ``BLEU-1`` .. ``BLEU-4``, ``METEOR``, ``ROUGE-L`` and
        ``CIDEr-D``; BLEU is corpus-level, the others are means over images.

    Raises
    ------
    UserError
        If the keys of `references` and `candidates` differ, a reference
        list is empty, or a metric name is unknown.
    """
    check_captions(references, candidates)   # before paying for Java start-up
    with CaptionScorer(metrics) as scorer:
        return scorer.score(references, candidates)


def write_results_json(path, candidates):
    """Write candidates in the COCO results format.

    Parameters
    ----------
    path : str or path-like
    candidates : dict
        Image key -> caption; written as
        ``[{"image_id": key, "caption": caption}, ...]``.
    """
    results = [{"image_id": k, "caption": c} for k, c in candidates.items()]
    atomic_write(path, lambda f: json.dump(results, f, indent=1), text=True)


def write_scores(path_json, path_csv, scores, meta=None):
    """Write scores (pycocoevalcap's scale) and run metadata as JSON and CSV.

    Parameters
    ----------
    path_json, path_csv : str or path-like
    scores : dict of str to float
        As returned by :func:`score_captions`.
    meta : dict, optional
        Flat run description (model, split, epoch, ...); it goes to
        ``"meta"`` in the JSON and to the first columns of the CSV's one row.
    """
    meta = dict(meta or {})
    atomic_write(path_json, lambda f: json.dump(
        {"meta": meta, "scores": scores}, f, indent=1), text=True)
    row = pd.DataFrame([{**meta, **scores}])
    atomic_write(path_csv, lambda f: row.to_csv(f, index=False), text=True)


def format_table(scores, others=None, name="this model"):
    """An aligned text table of scores x100, with optional comparison rows.

    Parameters
    ----------
    scores : dict of str to float
        As returned by :func:`score_captions` (0..1 scale).
    others : dict of str to dict, optional
        Row name -> scores already x100, e.g. :data:`PUBLISHED_FLICKR8K`;
        None or a missing metric prints as ``-``.
    name : str
        Label of the `scores` row.

    Returns
    -------
    str
    """
    rows = [(name, {k: 100 * v for k, v in scores.items()})]
    rows += list((others or {}).items())
    columns = [c for c in COLUMNS if any(r.get(c) is not None for _, r in rows)]
    width = max(len(n) for n, _ in rows)

    def cell(value):
        return "%8s" % ("-" if value is None else "%.1f" % value)

    lines = [" " * width + "".join("%8s" % c for c in columns)]
    lines += [n.ljust(width) + "".join(cell(r.get(c)) for c in columns) for n, r in rows]
    return "\n".join(lines)
