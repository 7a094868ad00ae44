"""The LCSTS recipe (configs/lcsts_new.yaml) end to end, on what this machine has: a tiny random BART saved as a
Hugging Face directory in fnlp/bart-base-chinese's layout (BERT vocab, [CLS]=101 / [SEP]=102, eos = decoder start =
[SEP]) and lcsts_new's own JSON-lines files read through paddlenlp's loader. The recipe's settings all stay (AMP,
beam 4, its lengths, rouge_style "chars") but for the device, the length of the run and where things are.

So the recipe's code path runs for real: the converter on first use, paddlenlp's lcsts_new reader, the chars
scoring, its labels in every result file. What it cannot show here is the published ROUGE-L (no weights, no GPU).
"""
import json
import os

import pytest

from helpers import ROOT, read_jsonl, run_entry
from paddle_finetune.evaluation.rouge import rouge_scores

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SPECIALS = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}  # fnlp/bart-base-chinese's ids


def sample_rows(split, n):
    with open(os.path.join(ROOT, "datasets", "sample_summarization", f"{split}.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f][:n]


def write_lcsts_new(path, rows):
    """paddlenlp's lcsts_new format: one JSON object a line, {"id", "content", "summary"}."""
    with open(path, "w", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            f.write(json.dumps({"id": i, "content": row["content"], "summary": row["title"]}, ensure_ascii=False) + "\n")
    return str(path)


def make_hf_bart_base_chinese_like(path, texts):
    """A tiny random BartForConditionalGeneration with a BERT vocab laid out as fnlp/bart-base-chinese's."""
    chars = sorted({c for text in texts for c in text.lower() if not c.isspace()})
    vocab = [SPECIALS.get(i, f"[unused{i}]") for i in range(104)] + chars
    path.mkdir()
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = transformers.BartConfig(
        vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=160,
        pad_token_id=0, bos_token_id=101, eos_token_id=102, decoder_start_token_id=102, forced_eos_token_id=102)
    config.architectures = ["BartForConditionalGeneration"]
    torch.manual_seed(0)
    model = transformers.BartForConditionalGeneration(config)
    with torch.no_grad():  # HF's small init generates [SEP] first, every time: an empty summary scores 0 in any style
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape))
    model.save_pretrained(str(path), safe_serialization=True)
    transformers.BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(str(path))
    return str(path)


def test_the_lcsts_recipe_runs_end_to_end_on_a_tiny_bart(tmp_path):
    train_rows, dev_rows = sample_rows("train", 64), sample_rows("dev", 8)
    train_file = write_lcsts_new(tmp_path / "train.json", train_rows)
    dev_file = write_lcsts_new(tmp_path / "dev.json", dev_rows)
    model_dir = make_hf_bart_base_chinese_like(tmp_path / "bart-base-chinese",
                                               [t for r in train_rows + dev_rows for t in (r["content"], r["title"])])
    out = tmp_path / "out"
    result = run_entry(["train.py", "--config", "configs/lcsts_new.yaml", f"--pretrained_model={model_dir}",
                        f"--train_file={train_file}", f"--dev_file={dev_file}", f"--output_dir={out}", "--device=cpu",
                        "--max_steps=4", "--save_steps=2", "--logging_steps=2", "--train_batch_size=16",
                        "--eval_batch_size=8", "--report_to=none"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr

    # the recipe's path: converted once by our converter, data through paddlenlp's lcsts_new reader, AMP off on CPU
    assert f"Converting HF checkpoint {model_dir} -> Paddle checkpoint {model_dir}-paddle" in log
    assert os.path.isfile(os.path.join(f"{model_dir}-paddle", "model.safetensors"))
    assert f"data: train 64 rows from dataset lcsts_new ({train_file})" in log
    config = json.loads((out / "train_config.json").read_text(encoding="utf-8"))
    assert (config["dataset_name"], config["num_beams"], config["use_amp"], config["rouge_style"]) == ("lcsts_new", 4, True, "chars")
    assert "use_amp" in log  # the warning that AMP is GPU-only

    # chars ROUGE, labelled everywhere, and equal to scoring the predictions file again
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 4] and all(r["rouge_style"] == "chars" for r in records)
    predictions = read_jsonl(out / "predictions_dev.jsonl")
    assert [p["reference"] for p in predictions] == [r["title"] for r in dev_rows]
    assert sum(1 for p in predictions if p["prediction"]) >= 4
    rescored = rouge_scores([p["prediction"] for p in predictions], [p["reference"] for p in predictions], "chars")
    assert rescored["rouge1"] > 0 and rescored != rouge_scores([p["prediction"] for p in predictions],
                                                               [p["reference"] for p in predictions], "cjk_tokens")
    results = json.loads((out / "all_results.json").read_text(encoding="utf-8"))
    assert {k: results[f"eval_{k}"] for k in rescored} == rescored and results["eval_rouge_style"] == "chars"
    assert "(rouge_style chars" in log
