"""rouge_style "chars" and "words" (evaluation.rouge_chars, rouge_words, lcs), each checked against the package
whose convention it is: `rouge` (pltrdy) on space-joined characters, as PaddleNLP's summarization examples call it,
and `rouge-chinese` on jieba words, as LLaMA-Factory calls it. The packages are only test references here.

The real-text checks read CSL (../shared/data/csl, skipped where absent): its titles are the references and two
baselines make the predictions (the abstract's opening, the paper's keywords), so overlaps are partial and real.
"""
import os
import random

import pytest

from helpers import CSL
from paddle_finetune.evaluation.lcs import backtracked_lcs, lcs_length
from paddle_finetune.evaluation.rouge import DEFAULT_ROUGE_STYLE, ROUGE_STYLES, pair_scores, rouge_scores

rouge_package = pytest.importorskip("rouge")
rouge_chinese = pytest.importorskip("rouge_chinese")
from rouge.rouge_score import _recon_lcs  # noqa: E402

TOL = 1e-6


# ---------------------------------------------------------------------------- the references, called as their users do
def paddlenlp_rouge(prediction, reference):
    """PaddleNLP's examples/text_summarization compute_metrics, one pair: a pair the package refuses scores 0."""
    try:
        score = rouge_package.Rouge().get_scores(" ".join(prediction), " ".join(reference))[0]
    except ValueError:
        return 0.0, 0.0, 0.0
    return score["rouge-1"]["f"], score["rouge-2"]["f"], score["rouge-l"]["f"]


def llamafactory_rouge(prediction, reference):
    """LLaMA-Factory's ComputeSimilarity, one pair (unrounded): jieba words, rouge-chinese, 0 without words."""
    import jieba

    hypothesis, ref = list(jieba.cut(prediction)), list(jieba.cut(reference))
    if not " ".join(hypothesis).split() or not " ".join(ref).split():
        return 0.0, 0.0, 0.0
    score = rouge_chinese.Rouge().get_scores(" ".join(hypothesis), " ".join(ref))[0]
    return score["rouge-1"]["f"], score["rouge-2"]["f"], score["rouge-l"]["f"]


REFERENCES = {"chars": paddlenlp_rouge, "words": llamafactory_rouge}


def assert_equal_to_reference(style, pairs):
    ours = pair_scores([p for p, _ in pairs], [r for _, r in pairs], style)
    expected = [REFERENCES[style](p, r) for p, r in pairs]
    for (pred, ref), got, want in zip(pairs, ours, expected):
        assert got == pytest.approx(want, abs=1e-12), (pred, ref)
    corpus = rouge_scores([p for p, _ in pairs], [r for _, r in pairs], style, digits=None)
    for k, name in enumerate(("rouge1", "rouge2", "rougeL")):
        assert corpus[name] == pytest.approx(100.0 * sum(w[k] for w in expected) / len(pairs), abs=TOL)
    return corpus


# ---------------------------------------------------------------------------- real Chinese text
def read_csl(name, column):
    with open(os.path.join(CSL, name), encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t")[column] for line in f]


@pytest.fixture(scope="module")
def csl_pairs():
    if not os.path.isdir(CSL):
        pytest.skip(f"CSL data not found at {CSL}")
    titles, abstracts = read_csl("ts_dev.tsv", 2), read_csl("ts_dev.tsv", 1)
    keywords = read_csl("kg_dev.tsv", 2)
    rng = random.Random(0)
    lead = [(abstract[: rng.randint(8, 40)], title) for abstract, title in zip(abstracts, titles)]
    keyword_titles = [("，".join(k.split("_")), title) for k, title in zip(keywords, titles)]
    return lead + keyword_titles


@pytest.mark.parametrize("style", ["chars", "words"])
def test_equal_to_the_published_scorer_on_csl(style, csl_pairs):
    corpus = assert_equal_to_reference(style, csl_pairs)
    assert 10 < corpus["rougeL"] < 90  # partial overlaps: the comparison is not of zeros or of copies


def test_the_styles_differ_by_points_on_csl(csl_pairs):
    """Why the style is named wherever a number is: on the same predictions the conventions disagree by points."""
    preds, refs = [p for p, _ in csl_pairs], [r for _, r in csl_pairs]
    scores = {style: rouge_scores(preds, refs, style) for style in ROUGE_STYLES}
    assert scores["words"]["rougeL"] < scores["chars"]["rougeL"] - 3
    assert abs(scores["chars"]["rouge1"] - scores["cjk_tokens"]["rouge1"]) > 0.1


# ---------------------------------------------------------------------------- the conventions' edges, on made-up text
EDGE_CHARS = list("的的是在了天安门北京我爱abcABC123") + [".", "..", " ", "  ", "\n", "\t", "。", "，", "！", "？", "…", "”",
                                                      "’", "?", "......", "……", "Paddle", "GPT-4", "3.14"]


def random_text(rng, length):
    return "".join(rng.choice(EDGE_CHARS) for _ in range(length))


def random_pairs(seed, n=400):
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        ref = random_text(rng, rng.randint(0, 30))
        if ref and rng.random() < 0.6:  # predictions reuse stretches of the reference
            start = rng.randrange(len(ref))
            pred = ref[start:start + rng.randint(1, 20)] + random_text(rng, rng.randint(0, 10))
        else:
            pred = random_text(rng, rng.randint(0, 30))
        pairs.append((pred, ref))
    return pairs + [("", "天安门"), ("天安门", ""), ("", ""), (".", "."), ("...", "a.b"), (" ", " "), ("a..b", "c. .d")]


@pytest.mark.parametrize("style", ["chars", "words"])
def test_equal_to_the_published_scorer_on_edge_cases(style):
    """Periods (the `rouge` package's sentence split, and the empty-string token between two of them), 。！？ and
    quotes (rouge-chinese's), whitespace, case, repeats, empty sides."""
    assert_equal_to_reference(style, random_pairs(1))


def test_chars_by_hand():
    # sets: prediction {天安门我爱} 5, reference {我爱北京天安门} 7, all 5 shared: P=1, R=5/7, F=5/6
    # bigrams: {天安 安门 门我 我爱} against {我爱 爱北 北京 京天 天安 安门}: 3 shared, P=3/4, R=1/2, F=3/5
    # LCS: 天安门, 3 distinct tokens: P=3/5, R=3/7, F=1/2 (the 1e-8 in F's denominator stays below 4 decimals)
    assert rouge_scores(["天安门我爱"], ["我爱北京天安门"], "chars") == {"rouge1": 83.3333, "rouge2": 60.0, "rougeL": 50.0}


def test_chars_counts_punctuation_and_keeps_case_cjk_tokens_does_not():
    assert rouge_scores(["你好，世界"], ["你好世界"], "chars")["rouge1"] == 88.8889  # P=4/5, R=1
    assert rouge_scores(["你好，世界"], ["你好世界"], "cjk_tokens")["rouge1"] == 100.0
    assert rouge_scores(["BART"], ["bart"], "chars")["rouge1"] == 0.0
    assert rouge_scores(["BART"], ["bart"], "cjk_tokens")["rouge1"] == 100.0


def test_chars_and_words_count_distinct_ngrams_so_repeats_cost_nothing():
    """The published convention scores n-gram *sets*: a prediction that repeats itself is not penalised."""
    assert rouge_scores(["的的的"], ["的"], "chars") == {"rouge1": 100.0, "rouge2": 0.0, "rougeL": 100.0}
    assert rouge_scores(["的的的"], ["的"], "cjk_tokens")["rouge1"] == 50.0


def test_words_match_whole_jieba_words():
    # jieba: 你好 ， 世界 against 你好 世界: P=2/3, R=1; no shared bigram; LCS 2 of 3 and 2 words
    assert rouge_scores(["你好，世界"], ["你好世界"], "words") == {"rouge1": 80.0, "rouge2": 0.0, "rougeL": 80.0}


@pytest.mark.parametrize("style", sorted(ROUGE_STYLES))
def test_empty_sides_score_zero_and_mismatched_lengths_fail(style):
    assert rouge_scores(["", "天安门"], ["天安门", ""], style) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert rouge_scores([], [], style) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    with pytest.raises(ValueError, match=r"len\(predictions\)=2 and len\(references\)=1"):
        rouge_scores(["a", "b"], ["a"], style)


def test_default_style_and_unknown_style():
    assert DEFAULT_ROUGE_STYLE == "chars"
    with pytest.raises(ValueError, match=r"rouge_style must be one of 'chars', 'words', 'cjk_tokens', got 'char'"):
        rouge_scores(["a"], ["a"], "char")


# ---------------------------------------------------------------------------- the LCS the package picks
def test_backtracked_lcs_is_the_packages_choice():
    """Ties decide which tokens the LCS holds ("aa" or "ab"), and the package's ROUGE-L counts them."""
    rng = random.Random(2)
    for _ in range(3000):
        x = [rng.choice("abcd") for _ in range(rng.randint(0, 25))]
        y = [rng.choice("abcd") for _ in range(rng.randint(0, 25))]
        expected = list(_recon_lcs(x, y, exclusive=False)._ngrams)
        assert backtracked_lcs(x, y) == expected, (x, y)
        assert lcs_length(x, y) == len(expected)


def test_backtracked_lcs_long_sequences():
    """Past 64 tokens the columns are multi-word integers; the package's recursion would stop near 1000."""
    rng = random.Random(3)
    x = [rng.choice("abcdefgh") for _ in range(300)]
    y = [rng.choice("abcdefgh") for _ in range(200)]
    expected = list(_recon_lcs(x, y, exclusive=False)._ngrams)
    assert backtracked_lcs(x, y) == expected
