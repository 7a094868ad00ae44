"""ROUGE-1/2/L for summaries, in pure Python, in the convention (rouge_style) whose numbers you compare with.

Published Chinese ROUGE comes in conventions that differ by points, not decimals, so every figure this project
writes names its style (metrics.jsonl, all_results.json, the dashboards, the prediction tool's metrics):

    "chars"       PaddleNLP's summarization examples and fnlp/CPT: every character a token, punctuation
                  included, scored like the `rouge` package (pltrdy). The LCSTS figures papers report
                  (fnlp/bart-base-chinese ROUGE-L 38.78) are in this style. The default.  (rouge_chars)
    "words"       LLaMA-Factory and OpenCompass: jieba words scored like `rouge-chinese`; lower.  (rouge_words)
    "cjk_tokens"  this project's earlier convention: CJK characters and whole lowercased Latin words, punctuation
                  dropped, `rouge_score`'s formulas (clipped counts, sentence-level LCS).  (rouge_cjk_tokens)

Each is the mean over samples of the per-sample F on a 0-100 scale. Hugging Face's `evaluate`/`rouge_score`
with their default tokenizer score Chinese ~0 (they delete non-ASCII characters); none of these do.

The scoring is written here, not imported: the packages are test-only references (tests/evaluation check each
style against its package on real Chinese text), and the training loop scores every evaluation.

Imports: the standard library; of the project `evaluation.lcs` and the three style modules (jieba inside
rouge_words).
"""
from paddle_finetune.evaluation import rouge_chars, rouge_cjk_tokens, rouge_words
from paddle_finetune.evaluation.lcs import lcs_length as rouge_lcs_length  # noqa: F401 - the name tests and tools know
from paddle_finetune.evaluation.rouge_cjk_tokens import rouge_pair_scores, tokenize_for_rouge  # noqa: F401

__all__ = ["ROUGE_STYLES", "DEFAULT_ROUGE_STYLE", "ROUGE_NAMES", "check_rouge_style", "pair_scores", "rouge_scores",
           "tokenize_for_rouge", "rouge_lcs_length", "rouge_pair_scores"]

# style -> (prediction text, reference text) -> (rouge1, rouge2, rougeL) F on 0-1
ROUGE_STYLES = {
    "chars": rouge_chars.score_pair,
    "words": rouge_words.score_pair,
    "cjk_tokens": rouge_cjk_tokens.score_pair,
}
# The style of the numbers users compare with: the published LCSTS results (README, "Which ROUGE").
DEFAULT_ROUGE_STYLE = "chars"
ROUGE_NAMES = ("rouge1", "rouge2", "rougeL")


def check_rouge_style(style):
    """The style's scorer; a ValueError naming the styles for any other value."""
    try:
        return ROUGE_STYLES[style]
    except (KeyError, TypeError):
        raise ValueError(f"rouge_style must be one of {', '.join(repr(s) for s in ROUGE_STYLES)}, got {style!r}") from None


def pair_scores(predictions, references, style=DEFAULT_ROUGE_STYLE):
    """[(rouge1, rouge2, rougeL)] per pair, unrounded F on a 0-1 scale."""
    if len(predictions) != len(references):
        raise ValueError(
            "predictions and references must have the same length, got "
            "len(predictions)=%d and len(references)=%d" % (len(predictions), len(references))
        )
    score = check_rouge_style(style)
    return [score(pred, ref) for pred, ref in zip(predictions, references)]


def rouge_scores(predictions, references, style=DEFAULT_ROUGE_STYLE, digits=4):
    """Corpus ROUGE as the mean of per-pair F, on a 0-100 scale.

    Returns ``{"rouge1": F, "rouge2": F, "rougeL": F}``, each rounded to `digits` decimals (None: unrounded; only
    the final mean is rounded, never per pair). An empty corpus returns zeros rather than raising so an
    evaluation step with no samples does not crash training.
    """
    totals = [0.0, 0.0, 0.0]
    for scores in pair_scores(predictions, references, style):
        for k, score in enumerate(scores):
            totals[k] += score
    n = max(len(predictions), 1)
    means = {name: 100.0 * total / n for name, total in zip(ROUGE_NAMES, totals)}
    return means if digits is None else {name: round(value, digits) for name, value in means.items()}
