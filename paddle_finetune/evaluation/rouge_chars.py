"""rouge_style "chars": the convention of PaddleNLP's summarization examples and fnlp/CPT, which the LCSTS numbers
papers report use (fnlp/bart-base-chinese ROUGE-L 38.78, cpt-large 42.08, PaddleNLP Pegasus 43.30/30.08/40.12):
every character is a token, punctuation included (`" ".join(text)`), scored like the `rouge` package (pltrdy,
1.0.1) with its defaults, and the per-sample F averaged; a pair the package refuses (an empty side) scores 0, as
PaddleNLP's compute_metrics scores it.

What the package does, and so what this module does (tests/evaluation check it against the package):

* Sentences: the text is split on ASCII "." (the parts that are not empty), and each part's whitespace is
  collapsed to single spaces; tokens are each sentence split on " ". Case is kept. A part of only whitespace
  (between two periods) becomes one empty-string token, as it does there.
* rouge1 / rouge2: the *sets* of distinct n-grams over the sentences' tokens joined end to end (the package's
  exclusive=True): P = |common| / |prediction's|, R = |common| / |reference's|.
* rougeL: summary-level union LCS: for each reference sentence and each prediction sentence, the tokens of the one
  LCS the textbook backtrack picks (evaluation.lcs.backtracked_lcs); the number of distinct tokens in the union
  of them all, over the number of distinct tokens of either side.
* F = 2PR / (P + R + 1e-8), the package's own formula (so a perfect match scores 0.99999999, not 1).

fnlp/CPT's evaluation first splits with BertTokenizer, which keeps Latin words and numbers whole and lowercases them
("166 . 5", "mbs"); on Chinese-only text that is this convention, and it is PaddleNLP's `" ".join(pred)` everywhere.

`sentence_words`, `distinct_rouge_n` and `f_score` are shared with rouge_style "words" (rouge-chinese is a fork of
the same package).

Imports: the standard library; of the project `evaluation.lcs`.
"""
from paddle_finetune.evaluation.lcs import backtracked_lcs

__all__ = ["period_sentences", "sentence_words", "f_score", "distinct_rouge_n", "union_lcs_rouge_l", "score_pair"]


def period_sentences(text):
    """The package's sentences: text split on ".", empty parts dropped, each part's whitespace collapsed."""
    return [" ".join(part.split()) for part in text.split(".") if part]


def sentence_words(sentences):
    """The tokens of the sentences, joined end to end (the package's _split_into_words)."""
    return [word for sentence in sentences for word in sentence.split(" ")]


def f_score(overlap, prediction_count, reference_count):
    """The package's f_r_p_rouge_n, in its own order of operations (so the floats are the same)."""
    precision = overlap / prediction_count if prediction_count else 0.0
    recall = overlap / reference_count if reference_count else 0.0
    return 2.0 * ((precision * recall) / (precision + recall + 1e-8))


def distinct_rouge_n(prediction_words, reference_words):
    """(rouge1, rouge2) F over the sets of distinct unigrams and bigrams."""
    p1, r1 = set(prediction_words), set(reference_words)
    p2, r2 = set(zip(prediction_words, prediction_words[1:])), set(zip(reference_words, reference_words[1:]))
    return f_score(len(p1 & r1), len(p1), len(r1)), f_score(len(p2 & r2), len(p2), len(r2))


def union_lcs_rouge_l(prediction_sentences, reference_sentences, prediction_words, reference_words):
    """The package's rouge_l_summary_level: distinct tokens of the union LCS over the distinct tokens of each side."""
    union = set()
    predictions = [sentence.split(" ") for sentence in prediction_sentences]
    for reference in reference_sentences:
        reference = reference.split(" ")
        for prediction in predictions:
            union.update(backtracked_lcs(reference, prediction))
    return f_score(len(union), len(set(prediction_words)), len(set(reference_words)))


def score_pair(prediction, reference):
    """(rouge1, rouge2, rougeL) F, 0-1, of one prediction text against its reference."""
    hyp, ref = period_sentences(" ".join(prediction)), period_sentences(" ".join(reference))
    if not hyp or not ref:  # the package raises "Hypothesis is empty."; PaddleNLP scores the pair 0
        return 0.0, 0.0, 0.0
    hyp_words, ref_words = sentence_words(hyp), sentence_words(ref)
    return (*distinct_rouge_n(hyp_words, ref_words), union_lcs_rouge_l(hyp, ref, hyp_words, ref_words))
