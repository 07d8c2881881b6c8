"""Caption metrics as lmms-eval computes them for COCO Caption and NoCaps: pycocoevalcap over the whole split.

Follows ``lmms_eval/tasks/coco_cap/utils.py`` (``coco_aggregation_result``) and ``lmms_eval/tasks/nocaps/utils.py``
(``nocaps_aggregation_result``), which are the same procedure:

1. each image's reference captions and the one predicted caption go through pycocoevalcap's ``PTBTokenizer`` (Stanford
   CoreNLP 3.4.1's PTB tokenizer run with ``java``, lower-cased, punctuation tokens dropped), references in one call
   and predictions in another;
2. ``Bleu(4)`` gives Bleu_1..Bleu_4 (corpus BLEU, "closest" reference length for the brevity penalty), ``Meteor()``
   METEOR 1.5 (``java``), ``Rouge()`` ROUGE_L (LCS F-measure, beta 1.2, best reference), ``Cider()`` CIDEr-D
   (n = 1..4, sigma 6, IDF over the references of the scored images, times 10).

Every number is pycocoevalcap's raw value, not a percentage: BLEU/METEOR/ROUGE_L in [0, 1], CIDEr about 0..10
(LLaVA-1.5-7B scores about 1.1 on COCO 2017 val in lmms-eval). :func:`score_captions` also returns each image's own scores;
pycocoevalcap's corpus CIDEr is exactly the mean of its per-image CIDEr, so the per-image CIDEr is the per-sample score
the tasks report (corpus BLEU and METEOR are not means of their per-image values).

Left out: SPICE (lmms-eval comments it out too; it downloads Stanford CoreNLP models when first run).

Differences from lmms-eval, none of which changes a number lmms-eval computes correctly:

- images are keyed by their position in the list, not by the COCO image id: lmms-eval builds a ``pycocotools.COCO``
  index keyed by image id, which merges the references of two samples with the same id and then fails
  pycocoevalcap's one-prediction-per-image assertion; with distinct ids (the real splits) the two are the same;
- the characters that Stanford's tokenizer treats as line breaks besides ``\\n`` (``\\r``, ``\\v``, ``\\f``, U+2028,
  U+2029) are replaced by a space before tokenizing, as pycocoevalcap itself does for ``\\n``. Unreplaced, each one
  splits a caption into two output lines, so every later caption is scored against another image's references
  (lmms-eval's numbers are then silently wrong);
- an empty list gives every metric 0.0 (lmms-eval fails); a corpus whose references are all empty after tokenization
  gives CIDEr 0.0 for every image (pycocoevalcap fails on ``max()`` of no document frequencies).

Few images: CIDEr's IDF is log(number of images) - log(images whose references contain the n-gram), so with one image
every weight is 0 and CIDEr is 0.0 whatever the caption (pycocoevalcap returns that without error, and so does this
module); with a handful of images CIDEr is far from its full-split value. Compare CIDEr only over the same, full split.

METEOR runs in one ``java`` process kept for the life of the Python process (it takes seconds to start; lmms-eval
starts one per metric call): METEOR scores each request on its own, so the numbers are the same.

``java`` (8 or newer) must be on ``PATH``; without it :func:`score_captions` raises
:class:`~tokenbench.errors.ConfigError`.
"""

from __future__ import annotations

import atexit
import shutil
from dataclasses import dataclass
from typing import Sequence

from tokenbench.errors import ConfigError

#: the metrics lmms-eval's coco/nocaps val tasks report, in our key names (theirs add a ``coco_``/``nocaps_`` prefix)
METRICS: tuple[str, ...] = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")

#: line breaks of Stanford's PTB tokenizer other than "\n" (which pycocoevalcap already replaces by a space)
_LINE_BREAKS = str.maketrans({c: " " for c in "\r\x0b\x0c\u2028\u2029"})


@dataclass(frozen=True)
class CaptionScores:
    """Corpus metrics and per-image scores of one set of predicted captions."""

    metrics: dict[str, float]  # metric -> corpus value (pycocoevalcap's ``score``)
    per_image: dict[str, list[float]]  # metric -> each image's value, in input order (pycocoevalcap's ``scores``)


def _require_java() -> None:
    if shutil.which("java") is None:
        raise ConfigError(
            "caption scoring needs a Java runtime: pycocoevalcap's PTB tokenizer and METEOR run `java`, which is not "
            "on PATH. Install Java 8 or newer (e.g. `apt-get install default-jre-headless`) and run again"
        )


def _imports():
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError as exc:
        raise ConfigError(f"caption scoring needs pycocoevalcap ({exc}); install it with "
                          "`pip install pycocoevalcap` (lmms-eval uses 1.2)") from exc
    return Bleu, Cider, Meteor, Rouge, PTBTokenizer


def _tokenize(tokenizer, captions: dict[int, list[str]], what: str) -> dict[int, list[str]]:
    """pycocoevalcap's tokenization of ``captions`` (index -> captions), checked to cover every index."""
    out = tokenizer.tokenize({k: [{"caption": str(c).translate(_LINE_BREAKS)} for c in v] for k, v in captions.items()})
    if set(out) != set(captions) or any(len(out[k]) != len(v) for k, v in captions.items()):
        got = sum(len(v) for v in out.values())
        raise ConfigError(f"pycocoevalcap's PTB tokenizer returned {got} of {sum(map(len, captions.values()))} "
                          f"{what}; `java` did not run it correctly (check `java -version`, Java 8 or newer)")
    return out


_METEOR = None  # one METEOR 1.5 process per Python process: it takes seconds to start (it loads paraphrase tables)


def _meteor(Meteor=None):
    """The shared pycocoevalcap ``Meteor`` scorer, started on first use (and again if its process has ended)."""
    global _METEOR
    if _METEOR is None or _METEOR.meteor_p.poll() is not None:
        if Meteor is None:
            Meteor = _imports()[2]
        _require_java()
        _METEOR = Meteor()
    return _METEOR


def _close_meteor() -> None:
    """End the shared METEOR process (a failed ``compute_score`` leaves its lock held and its output unread)."""
    global _METEOR
    meteor, _METEOR = _METEOR, None
    if meteor is not None:
        if meteor.lock.locked():
            meteor.lock.release()  # else Meteor.__del__ waits for it forever
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()


atexit.register(_close_meteor)


def _meteor_score(Meteor, gts, res):
    """pycocoevalcap's METEOR on the shared process. Each EVAL request is scored on its own, so reusing the process
    gives the numbers a fresh one (lmms-eval starts one per metric call) gives."""
    meteor = _meteor(Meteor)
    try:
        return meteor.compute_score(gts, res)
    except (ValueError, OSError) as exc:  # no score line: the JVM failed (memory: it runs with -Xmx2G) or died
        process = meteor.meteor_p
        _close_meteor()
        err = process.stderr.read().decode(errors="replace").strip().splitlines() if process.stderr else []
        raise ConfigError(f"METEOR (`java -jar meteor-1.5.jar`, pycocoevalcap) gave no score ({exc}); its last "
                          f"error line: {err[-1] if err else '(none)'}") from exc
    except BaseException:
        _close_meteor()
        raise


def score_captions(references: Sequence[Sequence[str]], predictions: Sequence[str],
                   metrics: Sequence[str] = METRICS) -> CaptionScores:
    """pycocoevalcap's ``metrics`` (default: all of :data:`METRICS`) for ``predictions[i]`` against the reference
    captions ``references[i]``, over the whole list (see the module docstring). Raises :class:`ConfigError` when an
    image has no reference caption, a metric is unknown, or Java/pycocoevalcap is missing."""
    if len(references) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} images; give one caption per image")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"unknown caption metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    empty = [i for i, refs in enumerate(references) if isinstance(refs, str) or not len(refs)]
    if empty:
        raise ConfigError(f"image {empty[0]} has no list of reference captions ({references[empty[0]]!r}); every image "
                          "needs at least one (COCO has 5, NoCaps 10)")
    if not predictions:
        return CaptionScores({m: 0.0 for m in metrics}, {m: [] for m in metrics})
    _require_java()
    Bleu, Cider, Meteor, Rouge, PTBTokenizer = _imports()

    tokenizer = PTBTokenizer()
    gts = _tokenize(tokenizer, {i: list(refs) for i, refs in enumerate(references)}, "reference captions")
    res = _tokenize(tokenizer, {i: ["" if p is None else p] for i, p in enumerate(predictions)}, "predicted captions")

    corpus: dict[str, float] = {}
    per_image: dict[str, list[float]] = {}
    if any(m.startswith("Bleu_") for m in metrics):
        score, scores = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(4):
            corpus[f"Bleu_{n + 1}"], per_image[f"Bleu_{n + 1}"] = float(score[n]), [float(s) for s in scores[n]]
    if "METEOR" in metrics:
        score, scores = _meteor_score(Meteor, gts, res)
        corpus["METEOR"], per_image["METEOR"] = float(score), [float(s) for s in scores]
    if "ROUGE_L" in metrics:
        score, scores = Rouge().compute_score(gts, res)
        corpus["ROUGE_L"], per_image["ROUGE_L"] = float(score), [float(s) for s in scores]
    if "CIDEr" in metrics:
        if any(ref.split() for refs in gts.values() for ref in refs):
            score, scores = Cider().compute_score(gts, res)
            corpus["CIDEr"], per_image["CIDEr"] = float(score), [float(s) for s in scores]
        else:  # no reference n-gram at all: pycocoevalcap fails on max() of no document frequencies
            corpus["CIDEr"], per_image["CIDEr"] = 0.0, [0.0] * len(predictions)
    return CaptionScores({m: corpus[m] for m in metrics}, {m: per_image[m] for m in metrics})
