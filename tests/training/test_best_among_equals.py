"""Issue #22, the best among equals: evaluations are compared only when they scored the same dev data with the same
evaluation settings. A resume that changes the dev set (max_eval_samples, or other rows at the same path) or an
evaluation setting (num_beams) is refused naming it; with resume_ignore_mismatch=True the best is re-based, logged,
and the earlier best is no longer compared; metrics.jsonl rows carry the evaluation's fingerprint. And the opposite
error: the same rows read another way (columns spelled out, .csv instead of .jsonl) resume.

One tiny BART trains 4 steps (evaluating at 2 and 4) once; every resume starts from a copy of it, in process
(train.run)."""
import csv
import json
import re
import shutil

import pytest
from helpers import read_jsonl

from paddle_finetune.errors import CheckpointError

ROWS = [{"content": f"第{i}条正文：城市{i % 5}发布了关于交通和天气的新规定，市民反响热烈。", "title": f"城市{i % 5}新规{i}"}
        for i in range(24)]
DEV = [{"content": f"开发集第{i}条：城市{i}的天气新闻。", "title": f"天气{i}"} for i in range(8)]
OTHER_DEV = [{"content": f"另一批第{i}条：城市{i}的交通新闻。", "title": f"交通{i}"} for i in range(8)]
TINY = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
        "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_position_embeddings": 128, "dropout": 0.0}
SETTINGS = {"model_config": TINY, "device": "cpu", "report_to": "none", "max_source_length": 48, "max_target_length": 8,
            "train_batch_size": 4, "eval_batch_size": 4, "logging_steps": 1, "save_steps": 2, "save_total_limit": 0,
            "learning_rate": 3e-3, "max_eval_samples": 8}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(base dir, output_dir of the 4-step run, its settings)."""
    import train

    base = tmp_path_factory.mktemp("best")
    settings = dict(SETTINGS, train_file=write_jsonl(base / "train.jsonl", ROWS), dev_file=write_jsonl(base / "dev.jsonl", DEV))
    out = base / "out"
    train.run(settings, output_dir=str(out), max_steps=4)
    return base, out, settings


def resume(trained, name, **changes):
    """train.run resuming a copy of the trained run at step 4, for 2 more steps, with `changes`."""
    import train

    base, out, settings = trained
    copy = base / name
    shutil.copytree(out, copy)
    return copy, train.run({**settings, **changes}, output_dir=str(copy), resume_from_checkpoint="auto", max_steps=6)


def test_every_metrics_row_carries_its_evaluation_fingerprint(trained):
    _, out, _ = trained
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [2, 4]
    assert len({r["eval_fingerprint"] for r in rows}) == 1 and rows[0]["eval_fingerprint"].startswith("sha256:")


def test_a_smaller_dev_set_through_max_eval_samples_is_refused_naming_it(trained):
    with pytest.raises(CheckpointError) as e:
        resume(trained, "fewer", max_eval_samples=1)
    message = str(e.value)
    assert re.search(r'exactly: dev data "sha256:\w+ \(8 features\)" -> "sha256:\w+ \(1 features\)" '
                     r'\(with max_eval_samples 8 -> 1\); restore them', message), message
    assert "--resume_ignore_mismatch=True to resume anyway (the best is then re-based" in message


def test_other_dev_rows_at_the_same_path_are_refused(trained):
    base, _, settings = trained
    changed = dict(settings, dev_file=write_jsonl(base / "dev_changed.jsonl", OTHER_DEV))
    with pytest.raises(CheckpointError, match=r'dev data "sha256:\w+ \(8 features\)" -> "sha256:\w+ \(8 features\)" '
                                              r'\(with dev_file "'):
        resume((base, trained[1], changed), "other_rows")
    # the same path, other content: named as dev data alone (no key changed)
    write_jsonl(base / "dev.jsonl", OTHER_DEV)
    try:
        with pytest.raises(CheckpointError) as e:
            resume(trained, "same_path")
    finally:
        write_jsonl(base / "dev.jsonl", DEV)
    assert re.search(r'exactly: dev data "sha256:\w+ \(8 features\)" -> "sha256:\w+ \(8 features\)"; restore them',
                     str(e.value)), str(e.value)


def test_an_evaluation_setting_is_refused_like_an_unsafe_key(trained):
    with pytest.raises(CheckpointError, match=r"cannot resume .*: num_beams 1 -> 2; restore them"):
        resume(trained, "beams", num_beams=2)


def test_resume_ignore_mismatch_re_bases_the_best(trained, capsys):
    _, out, _ = trained
    before = json.loads((out / "trainer_state.json").read_text())
    assert before["best_step"] in (2, 4)
    copy, results = resume(trained, "rebased", max_eval_samples=1, resume_ignore_mismatch=True)
    printed = capsys.readouterr().out
    assert (f"resume_ignore_mismatch=True: the best is re-based: the earlier best (rougeL={before['best_metric']} at step "
            f"{before['best_step']}, checkpoint-{before['best_step']}) scored other dev data or settings (dev data") in printed
    # the new best is chosen among the evaluations on the new dev set only
    assert results["best_step"] == 6
    rows = read_jsonl(copy / "metrics.jsonl")
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert rows[0]["eval_fingerprint"] == rows[1]["eval_fingerprint"] != rows[2]["eval_fingerprint"]
    state = json.loads((copy / "trainer_state.json").read_text())
    assert state["best_checkpoint"] == "checkpoint-6" and state["dev_fingerprint"].endswith("(1 features)")


def test_the_same_rows_read_another_way_resume(trained, capsys):
    """text_column=None -> "content" spelled out, and the same rows as .csv instead of .jsonl: the tokenized data is
    the same, so the resume goes on (logged), and the best is still compared with the earlier one."""
    base, _, _ = trained
    with open(base / "train.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["content", "title"])
        writer.writerows([r["content"], r["title"]] for r in ROWS)
    with open(base / "dev.tsv", "w", encoding="utf-8") as f:
        f.write("content\ttitle\n" + "".join(f"{r['content']}\t{r['title']}\n" for r in DEV))
    copy, results = resume(trained, "respelled", train_file=str(base / "train.csv"), dev_file=str(base / "dev.tsv"),
                           text_column="content", summary_column="title")
    printed = capsys.readouterr().out
    assert "with the same tokenized data read another way (allowed): dev_file" in printed
    assert 'summary_column (unset) -> "title"' not in printed and 'summary_column null -> "title"' in printed
    assert "re-based" not in printed
    rows = read_jsonl(copy / "metrics.jsonl")
    assert [r["step"] for r in rows] == [2, 4, 6] and len({r["eval_fingerprint"] for r in rows}) == 1
    best_step, best = None, None
    for r in rows:  # compared across the resume: the first of the highest rougeL
        if best is None or r["rougeL"] > best:
            best_step, best = r["step"], r["rougeL"]
    assert (results["best_step"], results["best_metric"]) == (best_step, best)
