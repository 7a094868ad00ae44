"""The prediction CLIs (#11, #12) through their real entry points, on a model each trainer just trained.

Their input is read with the training loader's rules (header files and JSON by name, columns detected
as training detects them, headerless TSV/CSV by index only), so on a file training evaluated the CLI
must reproduce training's own predictions_<split>.jsonl row for row and its metrics exactly: ROUGE for
summaries with references, accuracy and macro-F1 for labelled classification rows.
"""
import csv
import json
import os
import shutil

import pytest

from paddle_finetune.checkpoints.ownership import MANIFEST_FILE, record_output_file

from helpers import ROOT, read_jsonl, run_entry

BATCH = 8  # the eval_batch_size of both trainings: the CLIs then cut the same batches evaluation did
SUMMARIZE = os.path.join(ROOT, "tools", "predict_summarization.py")
CLASSIFY = os.path.join(ROOT, "tools", "predict_classification.py")


def the_error(result):
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert len(errors) == 1 and result.stderr.rstrip().splitlines()[-1] == errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return errors[0]


def ok(result):
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def write_csv(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def write_tsv(path, header, rows):
    path.write_text("".join("\t".join(r) + "\n" for r in ([header] if header else []) + rows), encoding="utf-8")
    return str(path)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------- summarization
def copy_task(n, seed):
    """Texts that repeat a two-character code 2-5 times, summarized by the code: 30 steps teach a tiny BART
    enough that its summaries differ from row to row (so a row mix-up shows) and are half right."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        code = "".join(rng.choice("甲乙丙丁戊己庚辛壬癸") for _ in range(2))
        rows.append({"content": "，".join([code] * rng.randint(2, 5)) + "。", "title": code})
    return rows


@pytest.fixture(scope="module")
def summarizer(tmp_path_factory):
    """train.py on the user's files: a header CSV to train on, JSON lines with text/summary as dev and a header
    CSV with content/title as test, each one's columns detected as the CLI must detect them."""
    d = tmp_path_factory.mktemp("summarizer")
    sample = copy_task(328, seed=0)
    files = {
        "train": write_csv(d / "train.csv", ["content", "title"], [[r["content"], r["title"]] for r in sample[:300]]),
        "dev": write_jsonl(d / "dev.jsonl", [{"id": i, "text": r["content"], "summary": r["title"]} for i, r in enumerate(sample[300:316])]),
        "test": write_csv(d / "test.csv", ["content", "title"], [[r["content"], r["title"]] for r in sample[316:328]]),
    }
    out = d / "out"
    result = run_entry(["train.py", f"--train_file={files['train']}", f"--dev_file={files['dev']}", f"--test_file={files['test']}",
                        f"--output_dir={out}", "--report_to=none", "--device=cpu", "--max_steps=30", "--save_steps=30",
                        "--train_batch_size=16", "--learning_rate=1e-2", "--warmup_proportion=0.1", f"--eval_batch_size={BATCH}",
                        "--max_target_length=8", "--model_config={'d_model': 32, 'encoder_layers': 1, 'decoder_layers': 1, "
                        "'encoder_attention_heads': 2, 'decoder_attention_heads': 2, 'encoder_ffn_dim': 64, 'decoder_ffn_dim': 64, "
                        "'dropout': 0.0}"])
    ok(result)
    results = json.loads((out / "all_results.json").read_text())
    dev = read_jsonl(out / "predictions_dev.jsonl")
    assert len({p["prediction"] for p in dev}) > 4 and 10 < results["eval_rougeL"] < 90, "the summaries must tell rows apart"
    return {"dir": d, "out": str(out), "files": files, "results": results,
            "dev": dev, "test": read_jsonl(out / "predictions_test.jsonl"), "test_rows": sample[316:328]}


ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "gen_len", "gen_chars")


def test_a_csv_with_a_header_predicts_its_rows_and_scores_them_as_training_did(summarizer, tmp_path):
    """Issue #11: the header used to be summarized as a row (--text_column defaulted to index 0)."""
    output = tmp_path / "preds.jsonl"
    result = ok(run_entry([SUMMARIZE, summarizer["out"], summarizer["files"]["test"], f"--output={output}", f"--batch_size={BATCH}"]))
    assert result.stdout == "", "with --output, stdout stays empty"
    records = read_jsonl(output)
    assert len(records) == 12 and "content" not in [r["source"] for r in records]
    assert records == [{"source": p["source"], "prediction": p["prediction"], "reference": p["reference"]} for p in summarizer["test"]]
    assert [r["source"] for r in records] == [r["content"] for r in summarizer["test_rows"]]
    metrics = json.loads((tmp_path / "preds.metrics.json").read_text())
    assert {k: metrics[k] for k in ROUGE_KEYS} == {k: summarizer["results"][f"test_{k}"] for k in ROUGE_KEYS}
    assert metrics["rows"] == metrics["scored_rows"] == 12 and metrics["reference_column"] == "title"
    assert f"input: 12 rows from {summarizer['files']['test']}; columns: text 'content', reference 'title' (detected)" in result.stderr
    assert f"metrics over 12 of 12 rows (reference column 'title'): rouge1={metrics['rouge1']}" in result.stderr
    assert f"using the final model in {summarizer['out']}" in result.stderr
    assert sorted(os.listdir(tmp_path)) == [MANIFEST_FILE, "preds.jsonl", "preds.metrics.json"]  # recorded as the tool's


def test_json_lines_with_a_detected_pair_print_predictions_on_stdout_and_rouge_on_stderr(summarizer, tmp_path):
    result = ok(run_entry([SUMMARIZE, summarizer["out"], summarizer["files"]["dev"], f"--batch_size={BATCH}"], cwd=tmp_path))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records == [{"source": p["source"], "prediction": p["prediction"], "reference": p["reference"]} for p in summarizer["dev"]]
    assert "columns: text 'text', reference 'summary' (detected)" in result.stderr
    shown = ", ".join(f"{k}={round(summarizer['results'][f'eval_{k}'], 4)}" for k in ROUGE_KEYS)
    assert f"metrics over 16 of 16 rows (reference column 'summary'): {shown}" in result.stderr
    assert os.listdir(tmp_path) == [], "no --output: no metrics file either"


def test_a_headerless_tsv_is_read_by_index_only_and_empty_references_are_not_scored(summarizer, tmp_path):
    rows = [[r["content"], r["title"]] for r in summarizer["test_rows"]]
    rows[3][1] = ""  # a row without a reference: predicted, not scored
    path = write_tsv(tmp_path / "test.tsv", None, rows)
    error = the_error(run_entry([SUMMARIZE, summarizer["out"], path]))  # its first row is not a header to name columns by
    assert error == (f"error: {path}: cannot tell the text column among {rows[0]}; set --text_column (a name, or a 0-based "
                     "index for a file without a header)")
    output = tmp_path / "preds.jsonl"
    result = ok(run_entry([SUMMARIZE, summarizer["out"], path, "--text_column=0", "--reference_column=1", f"--output={output}",
                           f"--batch_size={BATCH}"]))
    records = read_jsonl(output)
    assert [r["prediction"] for r in records] == [p["prediction"] for p in summarizer["test"]]
    assert [r["reference"] for r in records] == [r[1] for r in rows]
    from paddle_finetune.evaluation.rouge import rouge_scores

    scored = [i for i in range(12) if i != 3]
    expected = rouge_scores([summarizer["test"][i]["prediction"] for i in scored], [rows[i][1] for i in scored])
    metrics = json.loads((tmp_path / "preds.metrics.json").read_text())
    assert {k: metrics[k] for k in expected} == expected and (metrics["rows"], metrics["scored_rows"]) == (12, 11)
    assert "metrics over 11 of 12 rows (reference column 1; 1 with an empty reference not scored)" in result.stderr


def test_rouge_style_is_the_models_own_unless_chosen_and_the_metrics_name_it(summarizer, tmp_path):
    from paddle_finetune.evaluation.rouge import rouge_scores

    test = summarizer["files"]["test"]
    output = tmp_path / "words.jsonl"
    result = ok(run_entry([SUMMARIZE, summarizer["out"], test, f"--output={output}", f"--batch_size={BATCH}", "--rouge_style=words"]))
    records = read_jsonl(output)
    expected = rouge_scores([r["prediction"] for r in records], [r["reference"] for r in records], "words")
    metrics = json.loads((tmp_path / "words.metrics.json").read_text())
    assert {k: metrics[k] for k in expected} == expected and metrics["rouge_style"] == "words"
    assert expected != {k: summarizer["results"][f"test_{k}"] for k in expected}, "training scored chars"
    assert f"metrics over 12 of 12 rows (reference column 'title'): rouge1={metrics['rouge1']}" in result.stderr
    assert result.stderr.rstrip().splitlines()[-2].endswith("(rouge_style words)")

    # without --rouge_style: the style in the model's train_config.json (training's default, chars, is in the other tests)
    model = tmp_path / "model"
    model.mkdir()
    for name in os.listdir(summarizer["out"]):
        if os.path.isfile(os.path.join(summarizer["out"], name)):
            shutil.copy(os.path.join(summarizer["out"], name), model / name)
    saved = json.loads((model / "train_config.json").read_text())
    assert saved["rouge_style"] == "chars"
    (model / "train_config.json").write_text(json.dumps({**saved, "rouge_style": "cjk_tokens"}))
    ok(run_entry([SUMMARIZE, str(model), test, f"--output={tmp_path / 'own.jsonl'}", f"--batch_size={BATCH}"]))
    assert json.loads((tmp_path / "own.metrics.json").read_text())["rouge_style"] == "cjk_tokens"
    (model / "train_config.json").write_text(json.dumps({**saved, "rouge_style": "bleu"}))
    error = the_error(run_entry([SUMMARIZE, str(model), test, f"--output={tmp_path / 'bad.jsonl'}"]))
    assert error == (f"error: {model}: train_config.json has rouge_style 'bleu'; pass --rouge_style (chars, words, cjk_tokens)")


def test_a_known_text_column_alone_predicts_without_metrics_and_bad_rows_are_file_line_errors(summarizer, tmp_path):
    rows = [{"content": r["content"]} for r in summarizer["test_rows"][:4]]
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines[1] = '{"content": NaN}'
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "preds.jsonl"
    stale = tmp_path / "preds.metrics.json"
    stale.write_text('{"rougeL": 99.0}\n')  # an earlier run's, with references: recorded as the tool records it
    record_output_file(str(stale), tool="predict_summarization")
    error = the_error(run_entry([SUMMARIZE, summarizer["out"], str(path), f"--output={output}"]))
    assert error == f"error: {path}:2: source (column 'content') is NaN (a missing value)"
    assert not output.exists() and stale.read_text() == '{"rougeL": 99.0}\n', "a refused run writes and removes nothing"
    result = ok(run_entry([SUMMARIZE, summarizer["out"], str(path), f"--output={output}", "--skip_bad_rows"]))
    assert f"skip_bad_rows: skipped 1 bad row(s) in {path}; first: {path}:2: source (column 'content') is NaN" in result.stderr
    assert "columns: text 'content', no reference column (no ROUGE) (detected)" in result.stderr
    records = read_jsonl(output)
    assert [r["source"] for r in records] == [rows[i]["content"] for i in (0, 2, 3)] and all("reference" not in r for r in records)
    assert f"removed {stale}: it held an earlier run's metrics, and these predictions have none" in result.stderr
    assert "metrics over" not in result.stderr
    assert sorted(os.listdir(tmp_path)) == [MANIFEST_FILE, "preds.jsonl", "texts.jsonl"]


# ---------------------------------------------------------------------------- classification
@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """train_classification.py with a header TSV as dev and JSON lines as test, both labelled."""
    d = tmp_path_factory.mktemp("classifier")
    with open(os.path.join(ROOT, "datasets", "sample_classification", "train.tsv"), encoding="utf-8") as f:
        sample = [line.rstrip("\n").split("\t") for line in f][1:]
    files = {
        "train": write_tsv(d / "train.tsv", ["text", "label"], sample[:400]),
        "dev": write_tsv(d / "dev.tsv", ["text", "label"], sample[400:440]),
        "test": write_jsonl(d / "test.jsonl", [{"text": t, "label": y} for t, y in sample[440:464]]),
    }
    out = d / "out"
    ok(run_entry(["train_classification.py", f"--train_file={files['train']}", f"--dev_file={files['dev']}",
                  f"--test_file={files['test']}", f"--output_dir={out}", "--report_to=none", "--device=cpu", "--max_steps=80",
                  "--save_steps=80", "--train_batch_size=16", "--learning_rate=5e-3", f"--eval_batch_size={BATCH}",
                  "--model_config={'hidden_size': 32, 'num_hidden_layers': 1, 'num_attention_heads': 2, 'intermediate_size': 64}"]))
    dev = read_jsonl(out / "predictions_dev.jsonl")
    assert len({p["prediction"] for p in dev}) > 1 and len({p["probability"] for p in dev}) > 20, "rows must differ"
    return {"out": str(out), "files": files, "sample": sample, "dev": dev, "test": read_jsonl(out / "predictions_test.jsonl"),
            "dev_report": json.loads((out / "classification_report.json").read_text(encoding="utf-8")),
            "test_report": json.loads((out / "classification_report_test.json").read_text(encoding="utf-8"))}


def as_cli_records(training_predictions):
    return [{"text": p["text"], "gold_label": p["label"], "prediction": p["prediction"], "probability": p["probability"]}
            for p in training_predictions]


def test_a_labelled_tsv_gets_per_row_predictions_accuracy_and_macro_f1_as_in_training(classifier, tmp_path):
    output = tmp_path / "preds.jsonl"
    result = ok(run_entry([CLASSIFY, classifier["out"], classifier["files"]["dev"], f"--output={output}", f"--batch_size={BATCH}"]))
    assert read_jsonl(output) == as_cli_records(classifier["dev"])
    assert [r["gold_label"] for r in read_jsonl(output)] == [y for _, y in classifier["sample"][400:440]]
    metrics = json.loads((tmp_path / "preds.metrics.json").read_text(encoding="utf-8"))
    report = classifier["dev_report"]
    for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix"):
        assert metrics[key] == report[key], key
    assert metrics["labels"] == report["labels"] and (metrics["rows"], metrics["scored_rows"]) == (40, 40)
    assert "columns: text 'text', gold label 'label' (detected)" in result.stderr
    assert f"metrics over 40 of 40 rows: accuracy={report['accuracy']}, macro_f1={report['macro_f1']}" in result.stderr


@pytest.mark.parametrize("fast_kernels", [True, False, None])
def test_a_prediction_tool_loads_the_layers_the_run_evaluated_with(classifier, tmp_path, fast_kernels):
    """models.loading.load_trained: the run's fast_kernels (True when its config does not say) decides the layers."""
    from paddlenlp.transformers import AutoModelForSequenceClassification

    from paddle_finetune.checkpoints.files import TRAIN_CONFIG_FILE
    from paddle_finetune.models.loading import load_trained

    model_dir = tmp_path / "model"
    shutil.copytree(classifier["out"], model_dir, ignore=shutil.ignore_patterns("checkpoint-*"))
    config = json.loads((model_dir / TRAIN_CONFIG_FILE).read_text(encoding="utf-8"))
    config.pop("fast_kernels", None)
    if fast_kernels is not None:
        config["fast_kernels"] = fast_kernels
    (model_dir / TRAIN_CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")
    _, model, _, loaded = load_trained(str(model_dir), AutoModelForSequenceClassification, "cpu")
    fast_layers = [type(layer).__name__ for layer in model.sublayers() if type(layer).__name__.startswith("Fast")]
    assert loaded.get("fast_kernels", True) is (fast_kernels is not False)
    assert ("FastEncoderLayer" in fast_layers) is (fast_kernels is not False), fast_layers


def test_labelled_json_lines_print_label_probability_text_and_metrics_on_stderr(classifier, tmp_path):
    result = ok(run_entry([CLASSIFY, classifier["out"], classifier["files"]["test"], f"--batch_size={BATCH}"], cwd=tmp_path))
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines == [[p["prediction"], f"{p['probability']:.4f}", p["text"]] for p in classifier["test"]]
    report = classifier["test_report"]
    assert f"metrics over 24 of 24 rows: accuracy={report['accuracy']}, macro_f1={report['macro_f1']}" in result.stderr
    assert os.listdir(tmp_path) == []


def test_a_headerless_tsv_by_index(classifier, tmp_path):
    path = write_tsv(tmp_path / "dev.tsv", None, [[str(i), t, y] for i, (t, y) in enumerate(classifier["sample"][400:440])])
    error = the_error(run_entry([CLASSIFY, classifier["out"], path]))
    assert error.startswith(f"error: {path}: no column 'text' among ['0', ") and error.endswith(
        "set --text_column (a name, or a 0-based index for a file without a header)")
    output = tmp_path / "preds.jsonl"
    result = ok(run_entry([CLASSIFY, classifier["out"], path, "--text_column=1", "--label_column=2", f"--output={output}",
                           f"--batch_size={BATCH}"]))
    assert read_jsonl(output) == as_cli_records(classifier["dev"])
    assert json.loads((tmp_path / "preds.metrics.json").read_text())["accuracy"] == classifier["dev_report"]["accuracy"]
    assert "columns: text 1, gold label 2\n" in result.stderr


def test_unknown_gold_labels_and_extra_tabs_are_refused_and_scoring_can_be_turned_off(classifier, tmp_path):
    rows = [list(r) for r in classifier["sample"][400:404]]
    rows[2][1] = "天气"
    path = write_tsv(tmp_path / "unknown.tsv", ["text", "label"], rows)
    output = tmp_path / "preds.jsonl"
    error = the_error(run_entry([CLASSIFY, classifier["out"], path, f"--output={output}"]))
    labels = classifier["dev_report"]["labels"]
    assert error == (f"error: {path}: gold label(s) ['天气'] are not among the model's labels {labels}: it can never predict "
                     "them; fix the labels, or pass --label_column=\"\" to predict without scoring")
    assert not output.exists()
    result = ok(run_entry([CLASSIFY, classifier["out"], path, "--label_column=", f"--output={output}"]))
    records = read_jsonl(output)
    assert [r["text"] for r in records] == [t for t, _ in rows] and all(set(r) == {"text", "prediction", "probability"} for r in records)
    assert all(r["prediction"] in labels for r in records)
    assert "metrics" not in result.stderr and not (tmp_path / "preds.metrics.json").exists()
    extra = write_tsv(tmp_path / "extra.tsv", ["text", "label"], rows[:2] + [[rows[2][0], "体育", "多"]])
    assert the_error(run_entry([CLASSIFY, classifier["out"], extra])) == (
        f"error: {extra}:4: 3 fields, but the header (line 1) has 2; a tab inside a field, or a missing field?")
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(f"{rows[0][0]}\n\n{rows[1][0]}\t{rows[2][0]}\n", encoding="utf-8")
    assert the_error(run_entry([CLASSIFY, classifier["out"], str(mixed)])) == (
        f"error: {mixed}:3: a text pair (a TAB) among single texts; the first line sets which a file holds")
    pairs = run_entry([CLASSIFY, classifier["out"], path, "--text_pair_column=label", "--label_column="])
    assert the_error(pairs) == f"error: {classifier['out']} was trained on single texts, but the input holds text pairs"
