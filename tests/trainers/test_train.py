"""train.py: label masking, the real-token loss, decoding, and the real entry point end to end."""
import json
import os

import numpy as np
import pytest

import train
from helpers import CSL, ROOT, read_jsonl, run_entry, tiny_bart_arg
from paddle_finetune.errors import DataError
from paddle_finetune.tasks.summarization import collate, decode_ids, load_data, seq2seq_loss

TINY_MODEL = tiny_bart_arg(max_position_embeddings=512)
# Naming any split means naming them all: the built-in sample is used only when no data is given.
SAMPLE_SPLITS = [f"--{split}_file=datasets/sample_summarization/{split}.jsonl" for split in ("train", "dev", "test")]


def test_prediction_defaults_are_the_values_train_py_ships_with():
    """What the prediction tool uses for a model without train_config.json (a converted one) is training's default."""
    from paddle_finetune.tasks.summarization import PREDICTION_DEFAULTS

    assert {k: train.CONFIG[k] for k in PREDICTION_DEFAULTS} == PREDICTION_DEFAULTS


# ---------------------------------------------------------------------------- collate and labels
FEATURES = [{"input_ids": [2, 10, 11, 12, 3], "labels": [20, 21, 3]}, {"input_ids": [2, 13, 3], "labels": [22, 3]}]


def test_labels_padded_with_minus_100_and_decoder_starts_with_decoder_start_token():
    batch, num_tokens = collate(FEATURES, pad_id=0, decoder_start_id=7, ignore_pad=True)
    assert batch["input_ids"].tolist() == [[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[20, 21, 3], [22, 3, -100]]
    # decoder_start (7), not eos (3) as in the seed tutorial; padding never leaks -100 into the inputs
    assert batch["decoder_input_ids"].tolist() == [[7, 20, 21], [7, 22, 0]]
    assert num_tokens == 8 + 5


def test_pad_labels_with_pad_id_when_not_ignoring_and_pad_to_max():
    batch, num_tokens = collate(FEATURES, pad_id=0, decoder_start_id=7, ignore_pad=False, pad_to=(8, 6))
    assert batch["input_ids"].shape == (2, 8) and batch["labels"].shape == (2, 6)
    assert batch["labels"][1].tolist() == [22, 3, 0, 0, 0, 0]


def test_dynamic_padding_pads_to_the_longest_in_batch_only():
    batch, num_tokens = collate(FEATURES[1:], pad_id=0, decoder_start_id=7)
    assert batch["input_ids"].shape == (1, 3) and batch["labels"].shape == (1, 2)


def tiny_bart(vocab=60, dropout=0.0):
    import paddle
    from paddlenlp.transformers import BartConfig, BartForConditionalGeneration

    paddle.seed(0)
    cfg = BartConfig(vocab_size=vocab, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
                     pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2, dropout=dropout)
    model = BartForConditionalGeneration(cfg)
    model.eval()
    return model


def test_real_token_loss_equals_full_logits_cross_entropy_over_real_tokens():
    """Our loss is the mean over real target tokens of the full model's cross-entropy.

    paddle's F.cross_entropy(ignore_index=-100, reduction="mean") divides by *all* positions
    (measured on paddle 3.3.1), so paddlenlp's built-in BART loss is diluted by padding;
    the reference here is computed by hand instead.
    """
    import paddle
    import paddle.nn.functional as F

    model = tiny_bart()
    rng = np.random.RandomState(0)
    feats = [{"input_ids": list(rng.randint(4, 60, size=n)), "labels": list(rng.randint(4, 60, size=m)) + [3]}
             for n, m in [(9, 4), (5, 7), (12, 1)]]
    batch = {k: paddle.to_tensor(v) for k, v in collate(feats, pad_id=0, decoder_start_id=2).arrays.items()}
    ours = float(seq2seq_loss(model, batch))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   decoder_input_ids=batch["decoder_input_ids"])
    log_probs = F.log_softmax(logits.reshape([-1, 60]), axis=-1).numpy()
    labels = batch["labels"].numpy().reshape(-1)
    real = labels != -100
    assert real.sum() == 15
    reference = -log_probs[np.arange(len(labels))[real], labels[real]].mean()
    assert ours == pytest.approx(float(reference), abs=1e-5)


def test_decode_joins_chinese_without_spaces_and_stops_at_eos(tmp_path):
    from paddlenlp.transformers import BertTokenizer

    from paddle_finetune.data.text import write_char_vocab

    tok = BertTokenizer(vocab_file=write_char_vocab(["北京发布新规 bart"], str(tmp_path / "vocab.txt")))
    ids = tok("北京发布新规 bart", add_special_tokens=False)["input_ids"]
    # BertTokenizer drops whitespace, so a space between Chinese and Latin text cannot come back
    # (ROUGE ignores whitespace anyway); between Latin words it does.
    assert decode_ids(tok, [tok.cls_token_id] + ids + [3, 9, 9], eos_id=3, pad_id=0) == "北京发布新规bart"
    ids = tok("bart 北京 paddle", add_special_tokens=False)["input_ids"]
    assert decode_ids(tok, ids, eos_id=3, pad_id=0) == "bart北京paddle"


def test_lcsts_new_reads_local_files_through_paddlenlp(tmp_path):
    rows = [{"id": i, "content": f"第{i}条微博的正文内容", "summary": f"摘要{i}"} for i in range(5)]
    for name in ("train.json", "dev.json"):
        (tmp_path / name).write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    cfg = {**train.CONFIG, "dataset_name": "lcsts_new", "train_file": str(tmp_path / "train.json"),
           "dev_file": str(tmp_path / "dev.json")}
    data = load_data(cfg)
    assert data["train"][2] == {"source": "第2条微博的正文内容", "target": "摘要2"} and len(data["dev"]) == 5


def test_lcsts_new_offline_download_fails_with_advice(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr("paddlenlp.datasets.load_dataset", offline)
    with pytest.raises(DataError, match="lcsts_new.*Offline.*train_file"):
        load_data({**train.CONFIG, "dataset_name": "lcsts_new", "train_file": "", "dev_file": ""})


def test_columns_detected_from_known_names_and_dev_split(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,text,summary\n" + "".join(f"{i},正文{i},摘要{i}\n" for i in range(10)), encoding="utf-8")
    data = load_data({**train.CONFIG, "train_file": str(path), "dev_file": "", "dev_size": 3})
    assert len(data["train"]) == 7 and len(data["dev"]) == 3
    assert {r["source"] for r in data["train"] + data["dev"]} == {f"正文{i}" for i in range(10)}


# ---------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short real run of `python train.py` on the built-in sample, shared by the e2e assertions."""
    out = tmp_path_factory.mktemp("e2e") / "out"
    result = run_entry(["train.py", f"--output_dir={out}", tiny_bart_arg(d_model=64, max_position_embeddings=512),
                        "--max_steps=30", "--save_steps=10", "--logging_steps=5", "--save_total_limit=2",
                        "--max_eval_samples=16", "--train_batch_size=16", "--learning_rate=3e-3",
                        "--report_to=wandb", *SAMPLE_SPLITS])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result


def test_e2e_writes_logs_metrics_predictions_and_checkpoints(trained):
    out, result = trained
    log = read_jsonl(out / "train_log.jsonl")
    assert [r["step"] for r in log] == [5, 10, 15, 20, 25, 30]
    assert all({"step", "loss", "lr"} <= r.keys() for r in log)
    assert log[-1]["loss"] < log[0]["loss"] - 1.0, "training loss must fall"
    metrics = [m for m in read_jsonl(out / "metrics.jsonl") if m.get("split") != "test"]
    assert [m["step"] for m in metrics] == [10, 20, 30]
    assert all(0 <= m[k] <= 100 for m in metrics for k in ("rouge1", "rouge2", "rougeL"))
    assert any(m.get("split") == "test" for m in read_jsonl(out / "metrics.jsonl"))
    preds = read_jsonl(out / "predictions_dev.jsonl")
    assert len(preds) == 16 and {"source", "reference", "prediction"} <= preds[0].keys()
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["max_steps"] == 30 and saved["output_dir"] == str(out)
    assert "global batch 16 = 16 per device x 1 device(s) x 1 accumulation" in result.stdout
    assert "eval at step 30: rouge1=" in result.stdout
    assert "wandb sync" in result.stdout  # no credentials: offline, and the log says how to upload
    # the numbers name their ROUGE convention: the default, "chars"
    assert all(m["rouge_style"] == "chars" for m in read_jsonl(out / "metrics.jsonl"))
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_rouge_style"] == results["test_rouge_style"] == "chars"
    assert "rouge_style=chars" in result.stdout and "(rouge_style chars, step " in result.stdout


def test_eval_only_scores_in_the_style_it_is_given(trained, tmp_path):
    """A model trained (and selected) on chars, scored in another convention: its records say which, and the numbers are
    that convention's on the predictions the evaluation wrote."""
    out, _ = trained
    ev = tmp_path / "eval"
    result = run_entry(["train.py", "--do_train=False", f"--pretrained_model={out}", f"--output_dir={ev}", "--report_to=none",
                        "--max_eval_samples=16", "--rouge_style=cjk_tokens", *SAMPLE_SPLITS])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    from paddle_finetune.evaluation.rouge import rouge_scores

    dev = read_jsonl(ev / "metrics.jsonl")[0]
    predictions = read_jsonl(ev / "predictions_dev.jsonl")
    pairs = [p["prediction"] for p in predictions], [p["reference"] for p in predictions]
    assert dev["rouge_style"] == "cjk_tokens" and {k: dev[k] for k in ("rouge1", "rouge2", "rougeL")} == rouge_scores(*pairs, "cjk_tokens")
    assert json.loads((ev / "all_results.json").read_text())["eval_rouge_style"] == "cjk_tokens"


def test_e2e_checkpoints_hold_full_state_and_rotation_keeps_best(trained):
    out, _ = trained
    ckpts = sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-"))
    state = json.loads((out / "trainer_state.json").read_text())
    best = os.path.basename(state["best_checkpoint"])
    assert "checkpoint-30" in ckpts and best in ckpts and len(ckpts) <= 2
    metrics = {m["step"]: m["rougeL"] for m in read_jsonl(out / "metrics.jsonl") if "split" not in m}
    assert state["best_metric"] == max(metrics.values())
    for name in ("model.safetensors", "config.json", "vocab.txt", "optimizer.safetensors", "optimizer.json", "trainer_state.json",
                 "train_config.json", "CHECKPOINT_COMPLETE"):
        assert (out / "checkpoint-30" / name).exists(), name


def test_e2e_checkpoint_loads_with_paddlenlp_and_predict_cli(trained, tmp_path):
    out, _ = trained
    texts = tmp_path / "texts.txt"
    texts.write_text("3月1日，杭州图书馆对外表示，已经正式启动科普讲座系列。\n记者从成都交通局获悉，成都交通局发布新版服务指南。\n", encoding="utf-8")
    result = run_entry(["tools/predict_summarization.py", str(out), str(texts), f"--output={tmp_path / 'p.jsonl'}",
                        "--num_beams=4"])
    assert result.returncode == 0, result.stderr[-2000:]
    preds = read_jsonl(tmp_path / "p.jsonl")
    assert len(preds) == 2 and all(isinstance(p["prediction"], str) for p in preds)
    assert "杭州图书馆" in preds[0]["source"]


@pytest.mark.skipif(not os.path.isdir(CSL), reason="../shared/data/csl not present")
def test_csl_title_generation_learns(tmp_path):
    """Fine-tune on the real CSL abstract->title TSV via its preset; loss must fall and ROUGE-L rise."""
    out = tmp_path / "csl"
    result = run_entry(["train.py", "--config=csl_title.py", f"--train_file={os.path.join(CSL, 'ts_dev.tsv')}",
                        f"--output_dir={out}", "--report_to=none", "--max_steps=60", "--save_steps=30", "--eval_steps=20",
                        "--logging_steps=10", "--dev_size=40", "--max_source_length=128", "--learning_rate=2e-3",
                        "--model_config={'d_model': 64, 'encoder_layers': 1, 'decoder_layers': 1, 'encoder_attention_heads': 2, "
                        "'decoder_attention_heads': 2, 'encoder_ffn_dim': 128, 'decoder_ffn_dim': 128, "
                        "'max_position_embeddings': 256, 'dropout': 0.1}"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = read_jsonl(out / "train_log.jsonl")
    assert log[-1]["loss"] < log[0]["loss"] - 1.0
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [20, 40, 60]
    assert metrics[-1]["rougeL"] > metrics[0]["rougeL"]
    assert "data: train 960 rows from" in result.stdout
    assert "data: dev 40 rows from the training data, held out (dev_size)" in result.stdout


def test_pretrained_model_may_be_a_local_hf_directory(tmp_path):
    """An HF BART with a BERT vocab (fnlp/bart-base-chinese's layout) is converted once, cached, and fine-tuned."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from paddle_finetune.data.text import write_char_vocab

    hf_dir = tmp_path / "hf-bart"
    hf_dir.mkdir()
    texts = [json.loads(line)["content"] + json.loads(line)["title"]
             for line in open(os.path.join(ROOT, "datasets", "sample_summarization", "train.jsonl"), encoding="utf-8")]
    vocab = write_char_vocab(texts, str(hf_dir / "vocab.txt"))
    vocab_size = len(open(vocab, encoding="utf-8").read().split())
    torch.manual_seed(0)
    config = transformers.BartConfig(vocab_size=vocab_size, d_model=32, encoder_layers=1, decoder_layers=1,
                                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                                     decoder_ffn_dim=64, max_position_embeddings=256, pad_token_id=0, bos_token_id=2,
                                     eos_token_id=3, decoder_start_token_id=3, forced_eos_token_id=3)
    config.architectures = ["BartForConditionalGeneration"]
    transformers.BartForConditionalGeneration(config).save_pretrained(str(hf_dir))
    transformers.BertTokenizerFast(vocab_file=vocab).save_pretrained(str(hf_dir))

    out = tmp_path / "out"
    result = run_entry(["train.py", f"--pretrained_model={hf_dir}", f"--output_dir={out}", "--report_to=none",
                        "--max_steps=4", "--save_steps=4", "--logging_steps=2", "--max_eval_samples=8",
                        "--train_batch_size=8", "--learning_rate=1e-3"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    converted = tmp_path / "hf-bart-paddle"
    assert (converted / "model.safetensors").exists()
    # the model's own decoder_start (3 here, as in fnlp's config) is used, not a guess
    assert "decoder_start=3" in result.stdout
    assert (out / "checkpoint-4" / "CHECKPOINT_COMPLETE").exists()
    mtime = (converted / "model.safetensors").stat().st_mtime
    result = run_entry(["train.py", f"--pretrained_model={hf_dir}", f"--output_dir={tmp_path / 'out2'}",
                        "--report_to=none", "--max_steps=1", "--save_steps=1", "--max_eval_samples=2"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert (converted / "model.safetensors").stat().st_mtime == mtime, "converted once, then reused"


def test_resumed_run_continues_the_same_wandb_run(tmp_path):
    out = tmp_path / "out"
    common = [TINY_MODEL, f"--output_dir={out}", "--report_to=wandb", "--save_steps=2", "--max_eval_samples=4",
              "--train_batch_size=8", "--logging_steps=1"]
    first = run_entry(["train.py", *common, "--max_steps=2"])
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_entry(["train.py", *common, "--max_steps=4", "--resume_from_checkpoint=auto"])
    assert second.returncode == 0, second.stderr[-2000:]
    run_dirs = sorted(p.name for p in (out / "wandb").iterdir() if p.name.startswith("offline-run-"))
    assert len(run_dirs) == 2 and len({name.rsplit("-", 1)[1] for name in run_dirs}) == 1, run_dirs
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [1, 2, 3, 4]
