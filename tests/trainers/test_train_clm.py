"""train_clm.py: blocks, the shifted loss, generation, and the real entry point end to end."""
import json
import os

import numpy as np
import pytest
from helpers import CSL, read_jsonl, run_entry
from paddle_finetune.tasks.causal_lm import build_blocks, clm_logits, clm_loss, collate

TINY_GPT = ("--model_config={'hidden_size': 64, 'num_hidden_layers': 2, 'num_attention_heads': 2, "
            "'intermediate_size': 128, 'max_position_embeddings': 128, 'hidden_dropout_prob': 0.0, "
            "'attention_probs_dropout_prob': 0.0}")


def char_tokenizer(tmp_path, text):
    from paddlenlp.transformers import BertTokenizer

    from paddle_finetune.data.text import write_char_vocab

    return BertTokenizer(vocab_file=write_char_vocab([text], str(tmp_path / "vocab.txt")))


def test_blocks_join_texts_with_end_of_text_and_drop_the_remainder(tmp_path):
    texts = ["北京科技馆", "上海图书馆推出", "探险家"]
    tok = char_tokenizer(tmp_path, "".join(texts))
    blocks = build_blocks(texts, tok, 4)
    stream = [i for t in texts for i in tok.convert_tokens_to_ids(list(t)) + [tok.sep_token_id]]
    assert [b["input_ids"] for b in blocks] == [stream[i:i + 4] for i in range(0, len(stream) - 3, 4)]
    assert len(build_blocks(["北京"], tok, 64)) == 1  # a tiny corpus keeps its one short block
    batch, num_tokens = collate([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}], pad_id=0)
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]] and num_tokens == 4


def test_loss_is_next_token_cross_entropy():
    import paddle
    import paddle.nn.functional as F
    from paddlenlp.transformers import GPTConfig, GPTForCausalLM

    paddle.seed(0)
    model = GPTForCausalLM(GPTConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0))
    model.eval()
    batch, num_tokens = collate([{"input_ids": [5, 6, 7, 8]}, {"input_ids": [9, 10]}], pad_id=0)
    tensors = {k: paddle.to_tensor(v) for k, v in batch.items()}
    loss = float(clm_loss(model, tensors))
    logits = clm_logits(model, tensors["input_ids"]).numpy()
    log_probs = F.log_softmax(paddle.to_tensor(logits), axis=-1).numpy()
    targets = [(0, 0, 6), (0, 1, 7), (0, 2, 8), (1, 0, 10)]  # position t predicts token t+1; padding predicts nothing
    assert loss == pytest.approx(-np.mean([log_probs[b, t, y] for b, t, y in targets]), rel=1e-4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("clm") / "out"
    result = run_entry(["train_clm.py", f"--output_dir={out}", TINY_GPT, "--max_steps=30", "--save_steps=15",
                        "--logging_steps=5", "--max_train_samples=600", "--max_eval_samples=60", "--learning_rate=3e-3",
                        "--report_to=none"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result


def test_e2e_perplexity_falls_and_files_are_written(trained):
    out, result = trained
    assert "eval at step 0 (before training)" in result.stdout and "sample (greedy): 探险家 -> " in result.stdout
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 15, 30]
    assert metrics[-1]["perplexity"] < 0.2 * metrics[0]["perplexity"], metrics
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [5, 10, 15, 20, 25, 30]
    assert (out / "checkpoint-30" / "CHECKPOINT_COMPLETE").exists()
    assert json.loads((out / "trainer_state.json").read_text())["best_checkpoint"].endswith("checkpoint-30")


@pytest.mark.parametrize("strategy", ["greedy", "top_k", "top_p"])
def test_generate_cli_strategies(trained, strategy):
    out, _ = trained
    result = run_entry(["tools/generate_text.py", str(out), "探险家", "--strategy", strategy, "--max_new_tokens", "12", "--seed", "1"])
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[0]
    assert line.startswith("探险家") and len(line) > len("探险家")


@pytest.mark.skipif(not os.path.isdir(CSL), reason="../shared/data/csl not present")
def test_csl_titles_clm_lowers_dev_perplexity(tmp_path):
    # Titles of the 8000 training papers -> titles of 1000 other papers (ts/kg/dcp dev share their papers).
    out = tmp_path / "csl"
    result = run_entry(["train_clm.py", TINY_GPT, f"--train_file={os.path.join(CSL, 'cls_ctg_train.tsv')}", "--text_column=1",
                        f"--dev_file={os.path.join(CSL, 'cls_ctg_dev.tsv')}", "--max_train_samples=3000", "--max_eval_samples=300",
                        "--max_steps=40", "--save_steps=40", "--learning_rate=3e-3", "--sample_prompt=", f"--output_dir={out}",
                        "--report_to=none"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = read_jsonl(out / "metrics.jsonl")
    assert metrics[0]["step"] == 0 and metrics[-1]["step"] == 40
    assert metrics[-1]["perplexity"] < 0.5 * metrics[0]["perplexity"], metrics


def test_dataset_name_may_be_a_local_folder_with_a_text_column(tmp_path):
    """wikitext's layout (a "text" column, blank rows between paragraphs) from a local folder of JSON lines."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    lines = [f"探险家第{i}次带领队伍抵达了海边。" for i in range(60)]
    for name, part in (("train.jsonl", lines[:50]), ("validation.jsonl", lines[50:])):
        (folder / name).write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in part), encoding="utf-8")
    out = tmp_path / "out"
    result = run_entry(["train_clm.py", f"--dataset_name={folder}", f"--output_dir={out}", TINY_GPT, "--report_to=none",
                        "--max_steps=2", "--save_steps=2", "--block_size=16", "--sample_prompt="])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "data: train 50 rows from dataset" in result.stdout and "data: dev 10 rows from dataset" in result.stdout
    assert [m["step"] for m in read_jsonl(out / "metrics.jsonl")] == [0, 2]
