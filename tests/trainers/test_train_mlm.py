"""train_mlm.py: masking statistics, whole-word masking, text layouts, and the real entry point end to end."""
import json
import os

import numpy as np
import pytest
from helpers import CSL, read_jsonl, run_entry
from paddle_finetune.data.batching import batch_rng
from paddle_finetune.tasks.masked_lm import build_examples, collate, encode_with_masks, random_token_ids, tokenize_with_words

TINY_BERT = ("--model_config={'hidden_size': 64, 'num_hidden_layers': 2, 'num_attention_heads': 2, "
             "'intermediate_size': 128, 'max_position_embeddings': 128, 'hidden_dropout_prob': 0.0, "
             "'attention_probs_dropout_prob': 0.0}")
MASK_ID, PAD_ID, CLS_ID, SEP_ID = 4, 0, 2, 3
RANDOM_IDS = np.arange(5, 100)


def char_tokenizer(tmp_path, text):
    from paddlenlp.transformers import BertTokenizer

    from paddle_finetune.data.text import write_char_vocab

    return BertTokenizer(vocab_file=write_char_vocab([text], str(tmp_path / "vocab.txt")))


def random_features(rng, n=32, length=40):
    """Rows of varied length with [CLS] ... [SEP], word id -1 on the specials."""
    features = []
    for _ in range(n):
        body = rng.randint(5, 100, size=rng.randint(5, length)).tolist()
        features.append({"input_ids": [CLS_ID] + body + [SEP_ID], "word_ids": [-1] + list(range(len(body))) + [-1]})
    return features


# ---------------------------------------------------------------------------- masking statistics
def test_mask_rate_and_80_10_10_split_over_many_draws():
    rng = np.random.RandomState(0)
    features = random_features(rng)
    chosen = as_mask = as_random = as_same = real = 0
    for draw in range(300):
        batch, num_tokens = collate(features, batch_rng(1, 0, draw), PAD_ID, MASK_ID, RANDOM_IDS, 0.15)
        original = collate(features, np.random.RandomState(0), PAD_ID, MASK_ID, RANDOM_IDS, 0.15).arrays["labels"]  # shape only
        labels, ids = batch["labels"], batch["input_ids"]
        selected = labels != -100
        chosen += selected.sum()
        real += sum(len(f["input_ids"]) - 2 for f in features)
        as_mask += (ids[selected] == MASK_ID).sum()
        as_same += (ids[selected] == labels[selected]).sum()
        as_random += ((ids[selected] != MASK_ID) & (ids[selected] != labels[selected])).sum()
        assert original.shape == labels.shape
    assert chosen / real == pytest.approx(0.15, abs=0.01)
    assert as_mask / chosen == pytest.approx(0.8, abs=0.02)
    # a random replacement can hit the original token (1 in 95 here), so "unchanged" is a bit over 10%
    assert as_random / chosen == pytest.approx(0.1 * 94 / 95, abs=0.015)
    assert as_same / chosen == pytest.approx(0.1 + 0.1 / 95, abs=0.015)


def test_special_tokens_and_padding_are_never_masked_or_labelled():
    rng = np.random.RandomState(1)
    features = random_features(rng)
    for draw in range(100):
        batch, num_tokens = collate(features, batch_rng(2, 0, draw), PAD_ID, MASK_ID, RANDOM_IDS, 0.5)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            assert batch["labels"][i, 0] == -100 and batch["labels"][i, n - 1] == -100
            assert batch["input_ids"][i, 0] == CLS_ID and batch["input_ids"][i, n - 1] == SEP_ID
            assert (batch["labels"][i, n:] == -100).all() and (batch["input_ids"][i, n:] == PAD_ID).all()


def test_masking_is_reproducible_per_batch_rng_and_differs_across_epochs():
    features = random_features(np.random.RandomState(2))

    def draw(epoch):
        return collate(features, batch_rng(42, epoch, 3), PAD_ID, MASK_ID, RANDOM_IDS, 0.15).arrays["labels"]

    assert (draw(0) == draw(0)).all()
    assert not (draw(0) == draw(1)).all()


def test_at_least_one_token_is_masked_per_batch():
    features = [{"input_ids": [CLS_ID, 50, SEP_ID], "word_ids": [-1, 0, -1]}]
    for draw in range(50):
        batch, num_tokens = collate(features, np.random.RandomState(draw), PAD_ID, MASK_ID, RANDOM_IDS, 0.15)
        assert (batch["labels"] != -100).sum() == 1


def test_whole_word_masking_masks_all_characters_of_a_jieba_word(tmp_path):
    text = "探险家蔺琰带领队伍抵达北京。科技馆发布新版服务指南。"
    tok = char_tokenizer(tmp_path, text)
    ids, words = tokenize_with_words(text, tok, whole_word_mask=True)
    assert len(ids) == len(text) and max(words) < len(text) - 1  # some words have several characters
    features = build_examples([text] * 8, tok, 64, line_by_line=True, whole_word_mask=True)
    multi_char_masked = 0
    for draw in range(200):
        batch, num_tokens = collate(features, np.random.RandomState(draw), tok.pad_token_id, tok.mask_token_id,
                            random_token_ids(tok), 0.15)
        selected = batch["labels"] != -100
        for i, f in enumerate(features):
            word_ids = np.array(f["word_ids"])
            for w in set(word_ids[selected[i, : len(word_ids)]].tolist()):
                members = selected[i, : len(word_ids)][word_ids == w]
                assert members.all(), f"word {w} only partly masked"
                multi_char_masked += len(members) > 1
    assert multi_char_masked > 0


def test_line_by_line_and_block_layouts(tmp_path):
    texts = ["北京科技馆发布新版服务指南。", "上海图书馆推出公共图书借阅计划。", "探险家蔺琰带领队伍抵达北京。"]
    tok = char_tokenizer(tmp_path, "".join(texts))
    lines = build_examples(texts, tok, 10, line_by_line=True, whole_word_mask=False)
    assert len(lines) == 3 and all(len(f["input_ids"]) == 10 for f in lines)
    assert all(f["input_ids"][0] == tok.cls_token_id and f["input_ids"][-1] == tok.sep_token_id for f in lines)
    blocks = build_examples(texts, tok, 10, line_by_line=False, whole_word_mask=False)
    total = sum(len(t) + 1 for t in texts)  # each text ends with [SEP]
    assert len(blocks) == total // 8 and all(len(f["input_ids"]) == 10 for f in blocks)


def test_fill_mask_keeps_literal_mask_tokens(tmp_path):
    tok = char_tokenizer(tmp_path, "探险家带领队伍")
    ids = encode_with_masks("探险家[MASK][MASK]带领", tok)
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert ids[4:6] == [tok.mask_token_id] * 2 and len(ids) == 9


# ---------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("mlm") / "out"
    result = run_entry(["train_mlm.py", f"--output_dir={out}", TINY_BERT, "--max_steps=20", "--save_steps=10",
                        "--logging_steps=5", "--max_train_samples=400", "--max_eval_samples=60", "--report_to=none"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result


def test_e2e_writes_logs_checkpoints_initial_model_and_cloze_check(trained):
    out, result = trained
    assert "eval at step 0 (before training): loss=" in result.stdout and "cloze check:" in result.stdout
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 10, 20] and all("perplexity" in m for m in metrics)
    assert metrics[-1]["perplexity"] < metrics[0]["perplexity"]
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [5, 10, 15, 20]
    assert (out / "checkpoint-20" / "CHECKPOINT_COMPLETE").exists()
    assert (out / "initial_model" / "model.safetensors").exists()
    cloze = json.loads((out / "cloze_check.json").read_text(encoding="utf-8"))
    assert {"before", "after", "probe_text"} <= set(cloze) and len(cloze["after"]["top_k"]) == 2
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["metric_for_best"] == "perplexity"


def test_resume_reproduces_the_masked_loss_curve(tmp_path):
    """Resume from step 10 of a 20-step run: masks come from the per-batch RNG, so the losses match exactly."""
    import shutil

    out = tmp_path / "run"
    args = ["train_mlm.py", f"--output_dir={out}", TINY_BERT, "--max_steps=20", "--save_steps=10", "--logging_steps=5",
            "--max_train_samples=300", "--dev_file=", "--probe_text=", "--report_to=none"]
    straight = run_entry(args)
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = read_jsonl(out / "train_log.jsonl")
    shutil.rmtree(out / "checkpoint-20")  # as if killed after the step-10 checkpoint
    resumed = run_entry(args + ["--resume_from_checkpoint=auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    assert [(r["step"], round(r["loss"], 5)) for r in read_jsonl(out / "train_log.jsonl")] == \
        [(r["step"], round(r["loss"], 5)) for r in expected]


def test_fill_mask_cli_on_checkpoint_and_initial_model(trained):
    out, _ = trained
    for model_dir in (out / "checkpoint-20", out / "initial_model", out):
        result = run_entry(["tools/fill_mask.py", str(model_dir), "探险家[MASK][MASK]带领队伍", "--top_k", "3"])
        assert result.returncode == 0, result.stderr[-3000:]
        lines = result.stdout.strip().splitlines()
        assert lines[0].startswith("探险家[MASK][MASK]带领队伍 -> ")
        assert lines[1].startswith("mask 1: ") and lines[2].startswith("mask 2: ") and len(lines[1].split()) == 2 + 2 * 3


@pytest.mark.skipif(not os.path.isdir(CSL), reason="../shared/data/csl not present")
def test_csl_titles_mlm_lowers_dev_perplexity(tmp_path):
    out = tmp_path / "csl"
    result = run_entry(["train_mlm.py", TINY_BERT, f"--train_file={os.path.join(CSL, 'cls_ctg_train.tsv')}",
                        f"--dev_file={os.path.join(CSL, 'cls_ctg_dev.tsv')}", "--text_column=1", "--max_train_samples=2000",
                        "--max_eval_samples=300", "--max_steps=40", "--save_steps=40", "--learning_rate=2e-3",
                        "--probe_text=", f"--output_dir={out}", "--report_to=none"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = read_jsonl(out / "metrics.jsonl")
    assert metrics[0]["step"] == 0 and metrics[-1]["step"] == 40
    assert metrics[-1]["perplexity"] < 0.7 * metrics[0]["perplexity"], metrics


def test_default_run_learns_the_made_up_name(tmp_path):
    """The built-in default, untouched but for output_dir and wandb: the cloze effect must show."""
    out = tmp_path / "default"
    result = run_entry(["train_mlm.py", f"--output_dir={out}", "--report_to=none"], timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((out / "cloze_check.json").read_text(encoding="utf-8"))
    assert record["before_correct"] is False and record["after_correct"] is True
    assert "(expected 蔺琰: learned)" in result.stdout
    metrics = read_jsonl(out / "metrics.jsonl")
    assert metrics[-1]["perplexity"] < 0.1 * metrics[0]["perplexity"]
