"""rouge_style "cjk_tokens": this project's own ROUGE convention, scored with ``rouge_score``'s formulas.

Why not just use the ``rouge_score`` package: its default tokenizer deletes every non-ASCII character, so
Chinese predictions score 0 against anything. This convention tokenizes CJK text per character and scores
with the same formulas as ``rouge_score``:

* rouge1 / rouge2: clipped n-gram overlap, F1 = 2PR / (P + R).
* rougeL: sentence-level LCS F1 (``rouge_score``'s "rougeL", not "rougeLsum").

Tokenization rules (``tokenize_for_rouge``):

* Every CJK character is its own token: CJK Unified Ideographs (incl. extension A and the
  supplementary-plane extensions), compatibility ideographs, Hiragana, Katakana and Hangul syllables.
* Other runs of letters/digits form one lowercased word token. This covers Latin words and numbers, and
  also keeps e.g. Cyrillic or Greek words instead of silently deleting them (the very pitfall above).
* Everything else -- whitespace, ASCII and full-width punctuation, symbols, the underscore -- separates
  tokens and is dropped.
* '.' is punctuation everywhere, so numbers and versions split on it: "2.8" -> ['2', '8'],
  "3.14" -> ['3', '14'], "1,000" -> ['1', '000']. Digits are never glued across punctuation; this keeps
  the rule one line long and makes prediction and reference split identically.
* Full-width ASCII forms (U+FF01..U+FF5E, e.g. "ＧＰＴ４") are folded to ASCII first, so they match their
  half-width spelling ("gpt4").

Empty inputs: a pair whose prediction or reference has no tokens (empty, whitespace- or punctuation-only)
scores 0 on all metrics -- including when both are empty, as in ``rouge_score``. Scoring "nothing vs
nothing" as 100 would reward a model for emitting nothing on degenerate references.

Imports: the standard library; of the project `evaluation.lcs`.
"""
import re
from collections import Counter

from paddle_finetune.evaluation.lcs import lcs_length

__all__ = ["tokenize_for_rouge", "rouge_pair_scores", "score_pair"]

# Ranges whose every code point is a single token. Gaps inside the
# supplementary range are unassigned, so a single span is safe there.
_CJK_RANGES = (
    "\u3400-\u4dbf"  # CJK Unified Ideographs Extension A
    "\u4e00-\u9fff"  # CJK Unified Ideographs
    "\uf900-\ufaff"  # CJK Compatibility Ideographs
    "\U00020000-\U000323af"  # Extensions B..I + Compatibility Supplement
    "\u3041-\u309f"  # Hiragana
    "\u30a1-\u30fa\u30fc-\u30ff"  # Katakana, minus ゠ (U+30A0) and the middle dot ・ (U+30FB)
    "\u31f0-\u31ff"  # Katakana Phonetic Extensions
    "\uff66-\uff9f"  # Half-width Katakana
    "\uac00-\ud7af"  # Hangul Syllables
)

# [^\W_...] = "a word character that is neither '_' nor CJK": i.e. letters and
# digits of every other script. Excluding CJK here is what stops a Latin run
# from swallowing adjacent ideographs ("2.8训练" must not yield "8训练").
_TOKEN_RE = re.compile("[%s]|[^\\W_%s]+" % (_CJK_RANGES, _CJK_RANGES))

# Full-width ASCII variants sit at a fixed offset from ASCII.
_FULLWIDTH_TO_ASCII = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}


def tokenize_for_rouge(text):
    """Split ``text`` into ROUGE tokens (see the module docstring for the rules)."""
    return _TOKEN_RE.findall(text.translate(_FULLWIDTH_TO_ASCII).lower())


def _overlap(pred_counts, ref_counts):
    """Clipped match count: each n-gram counts at most as often as on either side."""
    if len(pred_counts) > len(ref_counts):
        pred_counts, ref_counts = ref_counts, pred_counts
    return sum(min(c, ref_counts[g]) for g, c in pred_counts.items() if g in ref_counts)


def _f1(matches, pred_total, ref_total):
    # 2PR/(P+R) with P = matches/pred_total, R = matches/ref_total simplifies
    # to this, and it is 0 (not a division error) whenever nothing matches.
    if not matches:
        return 0.0
    return 2.0 * matches / (pred_total + ref_total)


def rouge_pair_scores(pred_tokens, ref_tokens):
    """Unrounded (rouge1, rouge2, rougeL) F1 on a 0-1 scale for one token pair.

    Takes tokens rather than text so callers (and tests) can score any
    tokenization; an empty side yields (0.0, 0.0, 0.0).
    """
    if not pred_tokens or not ref_tokens:
        return 0.0, 0.0, 0.0
    n_pred, n_ref = len(pred_tokens), len(ref_tokens)
    r1 = _f1(_overlap(Counter(pred_tokens), Counter(ref_tokens)), n_pred, n_ref)
    r2 = 0.0
    if n_pred > 1 and n_ref > 1:
        matches = _overlap(
            Counter(zip(pred_tokens, pred_tokens[1:])),
            Counter(zip(ref_tokens, ref_tokens[1:])),
        )
        r2 = _f1(matches, n_pred - 1, n_ref - 1)
    # LCS can only be non-zero if some unigram matched.
    rl = _f1(lcs_length(pred_tokens, ref_tokens), n_pred, n_ref) if r1 else 0.0
    return r1, r2, rl


def score_pair(prediction, reference):
    """(rouge1, rouge2, rougeL) F1, 0-1, of one prediction text against its reference."""
    return rouge_pair_scores(tokenize_for_rouge(prediction), tokenize_for_rouge(reference))
