"""rouge_style "words": the convention of LLaMA-Factory and OpenCompass: jieba words (`jieba.cut`, its default
dictionary and HMM) joined by spaces, scored like the `rouge-chinese` package (1.0.3) with its defaults, and the
per-sample F averaged; a pair with no word on a side scores 0, as LLaMA-Factory scores it. Its numbers run below
"chars": a word must match whole.

rouge-chinese is a fork of the `rouge` package (evaluation.rouge_chars), with two differences this module keeps:

* Sentences are cut after 。！？? (and six periods, two ellipses, a closing quote after them), not on ".".
  Tokens are still the sentences' words joined end to end, so the cut only shows in a rare edge: a sentence of
  only whitespace becomes one empty-string token.
* rougeL: one plain LCS of all the prediction's words against all the reference's, over the word counts
  (not distinct words, as there).

rouge1 / rouge2 are the same sets of distinct n-grams, and F has the same 1e-8 in its denominator.
LLaMA-Factory rounds each sample's F to 4 decimals on the 0-100 scale before averaging; we average unrounded
(the difference is below 0.00005).

Imports: the standard library; jieba inside the functions; of the project `evaluation.lcs` and
`evaluation.rouge_chars`.
"""
import logging
import re

from paddle_finetune.evaluation.lcs import lcs_length
from paddle_finetune.evaluation.rouge_chars import distinct_rouge_n, f_score, sentence_words

__all__ = ["segment", "cut_sentences", "score_pair"]

# rouge-chinese's Rouge.cut_sent, rule for rule.
_SENTENCE_ENDS = (
    (re.compile("([。！？\\?])([^”’])"), r"\1\n\2"),
    (re.compile("(\\.{6})([^”’])"), r"\1\n\2"),
    (re.compile("(\\…{2})([^”’])"), r"\1\n\2"),
    (re.compile("([。！？\\?][”’])([^，。！？\\?])"), r"\1\n\2"),
)


def cut_sentences(text):
    """rouge-chinese's sentences of a space-joined text, whitespace collapsed, empty ones dropped."""
    for pattern, replacement in _SENTENCE_ENDS:
        text = pattern.sub(replacement, text)
    return [" ".join(part.split()) for part in text.rstrip().split("\n") if part]


def segment(text):
    """jieba's words of text joined by spaces, as LLaMA-Factory builds what it scores."""
    import jieba

    jieba.setLogLevel(logging.WARNING)  # not "Building prefix dict ..." on every first use
    return " ".join(jieba.cut(text))


def score_pair(prediction, reference):
    """(rouge1, rouge2, rougeL) F, 0-1, of one prediction text against its reference."""
    hyp, ref = segment(prediction), segment(reference)
    if not hyp.split() or not ref.split():
        return 0.0, 0.0, 0.0
    hyp_words, ref_words = sentence_words(cut_sentences(hyp)), sentence_words(cut_sentences(ref))
    rouge1, rouge2 = distinct_rouge_n(hyp_words, ref_words)
    return rouge1, rouge2, f_score(lcs_length(ref_words, hyp_words), len(hyp_words), len(ref_words))
