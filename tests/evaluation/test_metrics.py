"""Tests for rouge_style "cjk_tokens" (evaluation.rouge_cjk_tokens), checked against the independent ``rouge_score``
package. The other styles: test_rouge_styles.py.

The comparison tokenizer below is deliberately NOT ``tokenize_for_rouge``: if it
were, a tokenization bug would be reproduced on both sides and go unnoticed.
It only covers the common subset (BMP ideographs + ASCII words), so the texts
compared through it are restricted to that subset, and the test asserts both
tokenizers agree on them before comparing scores.
"""

import random
import re

import pytest
from rouge_score import rouge_scorer
from paddle_finetune.evaluation.rouge import rouge_lcs_length, rouge_pair_scores, tokenize_for_rouge
from paddle_finetune.evaluation.rouge import rouge_scores as rouge_scores_in_style


def rouge_scores(predictions, references):
    """This file checks one style, cjk_tokens (the default is "chars")."""
    return rouge_scores_in_style(predictions, references, style="cjk_tokens")


TOL = 1e-6  # on the 0-100 scale
TYPES = ["rouge1", "rouge2", "rougeL"]


class RegexTokenizer:
    """Minimal independent CJK-char / ASCII-word tokenizer for rouge_score."""

    _re = re.compile(r"[\u4e00-\u9fff]|[a-z0-9]+")

    def tokenize(self, text):
        return self._re.findall(text.lower())


class PassThroughTokenizer:
    """Lets rouge_score score pre-made token lists: tokens are joined with a
    separator that never occurs inside a token."""

    SEP = "\x00"

    def tokenize(self, text):
        return text.split(self.SEP) if text else []


def _reference_scores(scorer, prediction, reference):
    # rouge_score takes (target, prediction) and reports 0-1.
    result = scorer.score(reference, prediction)
    return [100.0 * result[t].fmeasure for t in TYPES]


def _textbook_lcs(a, b):
    # Plain O(n*m) DP, kept as obviously-correct as possible.
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


# A small vocabulary makes repeated n-grams and non-trivial LCS likely.
_ZH = list("我爱北京天安门的是在了不和有大这主中人上为们地个用工时要动国产以我到他会作来分生对于学下级就年阶义发成部民可出能方进同行面说种过命度革而多子后自社加小机也经力线本电高量长党得实家定深法表着水理化争现所二起政三好十战无农使性前等反体合斗路图把结第里正新开论之物从当两些还天资事队批如应形想制心样干都向变关点育重其思与间内去因件日利相由压员气业代全组数果期导平各基或月毛然问比展那它最及外没看治提五解系林者米群头意只明四道马认次文通但条较克又公孔领军流入接席位情运器并飞原油放立题质指建区验活众很教决特此常石强极土少已根共直团统式转别造切九你取西持总料连任志观调七么山程百报更见必真保热委手改管处己将修支识病象几先老光专什六型具示复安带每东增则完风回南广劳轮科北打积车计给节做务被整联步类集号列温装即毫知轴研单色坚据速防史拉世设达尔场织历花受求传口断况采精金界品判参层止边清至万确究书术状厂须离再目海交权且儿青才证低越际八试规斯近注办布门铁需走议县兵固除般引齿千胜细影济白格效置推空配刀叶率述今选养德话查差半敌始片施响收华觉备名红续均药标记难存测士身紧液派准斤角降维板许破述技消底床田势端感往神便贺村构照容非搞亚磨族火段算适讲按值美态黄易彪服早班麦削信排台声该击素张密害侯草何树肥继右属市严径螺检左页抗苏显苦英快称坏移约巴材省黑武培著河帝仅针怎植京助升王眼她抓含苗副杂普谈围食射源例致酸旧却充足短划剂宣环落首尺波承粉践府鱼随考刻靠够满夫失包住促枝局菌杆周护岩师举曲春元超负砂封换太模贫减阳扬江析亩木言球朝医校古呢稻宋听唯输滑站另卫字鼓刚写刘微略范供阿块某功套友限项余倒卷创律雨让骨远帮初皮播优占死毒圈伟季训控激找叫云互跟裂粮粒母练塞钢顶策双留误础吸阻故寸盾晚丝女散焊功株亲院冷彻弹错散商视艺灭版烈零室轻血倍缺厘泵察绝富城冲喷壤简否柱李望盘磁雄似困巩益洲脱投送奴侧润盖挥距触星松送获兴独官混纪依未突架宽冬章湿偏纹吃执阀矿寨责熟稳夺硬价努翻奇甲预职评读背协损棉侵灰虽矛厚罗泥辟告卵箱掌氧恩爱停曾溶营终纲孟钱待尽俄缩沙退陈讨奋械载胞幼哪剥迫旋征槽倒握担仍呀鲜吧卡粗介钻逐弱脚怕盐末阴丰雾冠丙街莱贝辐肠付吉渗瑞惊顿挤秒悬姆烂森糖圣凹陶词迟蚕亿矩")
_EN = "the a model of to and training data loss bart paddlenlp gpu 2 8 100 v3 fine tune eval".split()
_PUNCT = ["，", "。", "！", "？", "、", "；", "：", "“", "”", "（", "）", "《", "》", " ", ",", ".", "!", "?", "-", "'"]


def _random_text(rng, length, mode):
    parts = []
    for _ in range(length):
        roll = rng.random()
        if roll < 0.12:
            parts.append(rng.choice(_PUNCT))
        elif mode == "zh" or (mode == "mixed" and roll < 0.7):
            # Bias toward a few characters so overlaps and repeats are common.
            parts.append(rng.choice(_ZH[:40] if rng.random() < 0.5 else _ZH))
        else:
            # Spaces around words so neither tokenizer can merge adjacent words.
            parts.append(" %s " % rng.choice(_EN))
    return "".join(parts)


def _random_prediction(rng, ref, max_len, mode):
    # Real predictions reuse stretches of the reference; splicing copied
    # fragments with fresh text gives shared bigrams and a non-trivial LCS.
    parts = []
    for _ in range(rng.randint(0, 4)):
        if ref and rng.random() < 0.6:
            start = rng.randrange(len(ref))
            parts.append(ref[start : start + rng.randint(1, len(ref) // 2 + 1)])
        else:
            parts.append(_random_text(rng, rng.randint(1, max_len // 2), mode))
    return "".join(parts)


def _random_pairs(seed, mode, n, pred_len, ref_len):
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        ref = _random_text(rng, rng.randint(1, ref_len), mode)
        pairs.append((_random_prediction(rng, ref, pred_len, mode), ref))
    return pairs


HAND_PAIRS = [
    ("我爱天安门", "我爱北京天安门"),
    ("天安门我爱", "我爱北京天安门"),
    ("的的的", "的"),
    ("the cat sat on the mat", "the cat was on the mat"),
    ("on the mat the cat sat", "the cat sat on the mat"),
    ("使用PaddleNLP训练BART模型", "我们用 PaddleNLP 训练了一个 BART 模型。"),
    ("今天天气很好，我们去公园。", "今天天气不错！我们去了公园"),
    ("a b a b a b", "b a b a"),
    ("完全相同的句子", "完全相同的句子"),
    ("毫无关系", "other words"),
]


# --- independent comparison against rouge_score -----------------------------


@pytest.mark.parametrize(
    "pairs",
    [
        HAND_PAIRS,
        _random_pairs(1, "zh", 150, 30, 120),
        _random_pairs(2, "en", 150, 20, 60),
        _random_pairs(3, "mixed", 150, 30, 100),
    ],
    ids=["hand", "random-zh", "random-en", "random-mixed"],
)
def test_text_scores_match_rouge_score(pairs):
    scorer = rouge_scorer.RougeScorer(TYPES, tokenizer=RegexTokenizer())
    sums = [0.0, 0.0, 0.0]
    for pred, ref in pairs:
        # Precondition for an apples-to-apples comparison.
        assert tokenize_for_rouge(pred) == RegexTokenizer().tokenize(pred)
        assert tokenize_for_rouge(ref) == RegexTokenizer().tokenize(ref)

        expected = _reference_scores(scorer, pred, ref)
        ours = [100.0 * s for s in rouge_pair_scores(tokenize_for_rouge(pred), tokenize_for_rouge(ref))]
        assert ours == pytest.approx(expected, abs=TOL), (pred, ref)
        sums = [s + e for s, e in zip(sums, expected)]

    corpus = rouge_scores([p for p, _ in pairs], [r for _, r in pairs])
    # The public result is rounded to 4 decimals, so allow half a unit there.
    for name, total in zip(TYPES, sums):
        assert corpus[name] == pytest.approx(total / len(pairs), abs=5e-5 + TOL)


def test_token_scoring_matches_rouge_score_on_identical_tokens():
    # Scores arbitrary token lists (incl. tokens our tokenizer could never
    # produce, and long sequences) to test the scoring apart from tokenization.
    rng = random.Random(4)
    scorer = rouge_scorer.RougeScorer(TYPES, tokenizer=PassThroughTokenizer())
    for _ in range(300):
        vocab = [str(i) for i in range(rng.randint(1, 12))] + ["x y", "中"]
        pred = rng.choices(vocab, k=rng.randint(0, 40))
        ref = rng.choices(vocab, k=rng.randint(0, 150))
        expected = _reference_scores(scorer, PassThroughTokenizer.SEP.join(pred), PassThroughTokenizer.SEP.join(ref))
        ours = [100.0 * s for s in rouge_pair_scores(pred, ref)]
        assert ours == pytest.approx(expected, abs=TOL), (pred, ref)


def test_default_rouge_score_tokenizer_zeroes_chinese():
    # The pitfall this module exists for: rouge_score's default tokenizer
    # strips non-ASCII, so even an exact Chinese match scores 0 there.
    text = "今天天气很好"
    default = rouge_scorer.RougeScorer(TYPES).score(text, text)
    assert all(default[t].fmeasure == 0 for t in TYPES)
    assert rouge_scores([text], [text]) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}


# --- LCS ----------------------------------------------------------------------


def test_lcs_matches_textbook_dp():
    rng = random.Random(5)
    for _ in range(300):
        alphabet = "abcdef"[: rng.randint(1, 6)]
        # Lengths past 64 make sure nothing relies on machine-word-sized masks.
        a = rng.choices(alphabet, k=rng.randint(0, 150))
        b = rng.choices(alphabet, k=rng.randint(0, 150))
        assert rouge_lcs_length(a, b) == _textbook_lcs(a, b)
        assert rouge_lcs_length(b, a) == _textbook_lcs(a, b)


def test_lcs_small_cases():
    assert rouge_lcs_length([], ["a"]) == 0
    assert rouge_lcs_length(list("abc"), list("abc")) == 3
    assert rouge_lcs_length(list("abc"), list("xyz")) == 0
    assert rouge_lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # CLRS example


# --- hand-computed values -----------------------------------------------------


def test_identical_is_100_and_disjoint_is_0():
    assert rouge_scores(["模型训练完成了"], ["模型训练完成了"]) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    assert rouge_scores(["the model"], ["The Model!"]) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    assert rouge_scores(["猫狗"], ["鸟鱼 bird"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_hand_computed_case():
    # pred 天安门我爱 -> 天 安 门 我 爱 (5 tokens); ref 我爱北京天安门 -> 7 tokens.
    # rouge1: all 5 pred tokens occur in ref: P=5/5, R=5/7, F=2*1*(5/7)/(1+5/7)=10/12 -> 83.3333
    # rouge2: pred bigrams 天安 安门 门我 我爱; ref 我爱 爱北 北京 京天 天安 安门;
    #         3 shared: P=3/4, R=3/6, F=2*(3/8)/(5/4)=3/5 -> 60
    # rougeL: LCS is 天安门 (or 我爱), length 3: P=3/5, R=3/7, F=2*(9/35)/(36/35)=1/2 -> 50
    assert rouge_scores(["天安门我爱"], ["我爱北京天安门"]) == {"rouge1": 83.3333, "rouge2": 60.0, "rougeL": 50.0}


def test_clipped_counts_and_averaging():
    # 的的的 vs 的: only one 的 can match -> P=1/3, R=1, F=1/2; no bigram in ref -> 0.
    # Averaged with an identical two-token pair (100 each): (50+100)/2, (0+100)/2, (50+100)/2.
    assert rouge_scores(["的的的", "很好"], ["的", "很好"]) == {"rouge1": 75.0, "rouge2": 50.0, "rougeL": 75.0}


# --- edge cases ---------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, ref",
    [("", "参考摘要"), ("预测摘要", ""), ("", ""), ("，。！？…… ", "参考"), ("预测", "!!! ---"), ("   ", "\n\t")],
)
def test_empty_or_punctuation_only_scores_zero(pred, ref):
    assert rouge_scores([pred], [ref]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_empty_corpus_scores_zero():
    assert rouge_scores([], []) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_length_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match=r"len\(predictions\)=2.*len\(references\)=1"):
        rouge_scores(["a", "b"], ["a"])


def test_single_token_sides_have_zero_rouge2():
    assert rouge_scores(["好"], ["好"]) == {"rouge1": 100.0, "rouge2": 0.0, "rougeL": 100.0}


# --- tokenization -------------------------------------------------------------


def test_tokenize_mixed_text_example():
    assert tokenize_for_rouge("使用PaddleNLP 2.8训练BART模型") == [
        "使", "用", "paddlenlp", "2", "8", "训", "练", "bart", "模", "型",
    ]  # fmt: skip


def test_tokenize_covers_cjk_extensions_and_other_cjk_scripts():
    # U+3400/U+4DB5: extension A; U+20000: extension B; U+F900: compatibility
    # ideograph. Escaped because editors may silently normalize U+F900 to
    # U+8C48, which would no longer test the compatibility block. They sit
    # next to each other and to Latin letters, so a character wrongly treated
    # as a letter would merge into a multi-character token.
    text = "\u3400\u3400\u4db5a\U00020000\uf900b"
    assert tokenize_for_rouge(text) == ["\u3400", "\u3400", "\u4db5", "a", "\U00020000", "\uf900", "b"]
    assert tokenize_for_rouge("ひらがなカタカナー한국어") == list("ひらがなカタカナー한국어")


def test_tokenize_drops_full_width_and_ascii_punctuation():
    text = "，。！？、；：“”（）《》「」【】・…—～ ,.!?;:'\"()[]-_/"
    assert tokenize_for_rouge(text) == []
    assert tokenize_for_rouge("你好，世界！（测试）《书名》") == list("你好世界测试书名")


def test_tokenize_numbers_split_on_punctuation():
    # Documented choice: '.' and ',' are punctuation, so numbers split on them.
    assert tokenize_for_rouge("v3.14 版本 1,000 条") == ["v3", "14", "版", "本", "1", "000", "条"]


def test_tokenize_folds_full_width_ascii_and_case():
    assert tokenize_for_rouge("ＧＰＴ４ Gpt4 gpt4") == ["gpt4", "gpt4", "gpt4"]


def test_tokenize_keeps_non_latin_words():
    # Non-CJK scripts form word runs instead of being deleted.
    assert tokenize_for_rouge("Привет, café!") == ["привет", "café"]
