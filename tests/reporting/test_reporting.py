"""reporting: log lines and run.log, progress bars, result files, VisualDL, summaries and the curves picture.

quiet_libraries() changes process-wide logging, so it is tested in a subprocess (test_reporting_loop.py
and test_quiet_libraries_* below); wandb too, as the other end-to-end tests run it.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
from paddle_finetune.paths import PROJECT_ROOT
import pytest

from paddle_finetune.errors import ConfigError
from paddle_finetune.runtime import state
from paddle_finetune.training.session import Run
from paddle_finetune.reporting.console import DEBUG_ENV, _show_warning, attach_run_log, debug, error, log, warn, warn_once
from paddle_finetune.reporting.curves import plot_training_curves, training_curve_panels
from paddle_finetune.reporting.dashboards import Reporting, _next_record_file, open_reporting, parse_targets
from paddle_finetune.reporting.files import read_jsonl, summary_lines, write_results
from paddle_finetune.reporting.progress import PROGRESS_ENV, ProgressBar, progress_bar

ROOT = PROJECT_ROOT
STAMP = r"\[\d\d:\d\d:\d\d\] "


@pytest.fixture(autouse=True)
def fresh_run_log():
    """Each test runs inside a run state of its own: nothing buffered, no run.log attached."""
    run = state.begin()
    yield
    state.end(run)


def close_run_log():
    state.current().run_log.close()


def run_log_lines(out):
    return (out / "run.log").read_text(encoding="utf-8").splitlines()


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


# ---------------------------------------------------------------------------- log lines and run.log
def test_log_and_warn_lines_are_timestamped_on_stdout(capsys):
    log("hello")
    warn("careful")
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(STAMP + "hello", out[0]) and re.fullmatch(STAMP + "WARNING: careful", out[1])


def test_run_log_buffers_until_attached_then_appends_and_resume_appends(tmp_path, capsys):
    out = tmp_path / "out"
    log("before the output dir may be written")
    warn_once("a warning before attach")
    assert not out.exists(), "nothing may touch output_dir before attach_run_log"
    assert attach_run_log(str(out)) == str(out / "run.log")
    log("after attach")
    close_run_log()
    console = capsys.readouterr().out.splitlines()
    lines = run_log_lines(out)
    assert lines[0].startswith("==== ") and lines[1:] == console, "run.log holds exactly the console lines, timestamps included"
    assert any("WARNING: a warning before attach" in line for line in lines)

    log("the resumed run")  # a second process (resume) appends to the same file
    attach_run_log(str(out))
    close_run_log()
    lines = run_log_lines(out)
    assert sum(line.startswith("==== ") for line in lines) == 2 and lines[-1].endswith("the resumed run")
    assert lines[1].endswith("before the output dir may be written"), "the first run's lines are kept"


def test_a_run_that_never_attaches_writes_nothing(tmp_path):
    log("refused: output_dir is not empty")
    error("output_dir is not empty")
    assert list(tmp_path.iterdir()) == []


def test_error_goes_to_stderr_and_run_log(tmp_path, capsys):
    attach_run_log(str(tmp_path))
    error("loss is nan at step 3")
    close_run_log()
    assert capsys.readouterr().err == "error: loss is nan at step 3\n"
    assert run_log_lines(tmp_path)[-1] == "error: loss is nan at step 3"


def test_uncaught_exception_traceback_is_appended_to_run_log_by_the_run(tmp_path, capsys):
    """The run that owns run.log records the traceback of what ended it (no sys.excepthook swapping)."""
    close_run_log()
    state.end(state.current())  # this test's own run, through the real owner
    hook = sys.excepthook
    with pytest.raises(ValueError, match="boom"):
        with Run({"output_dir": str(tmp_path / "out")}):
            attach_run_log(str(tmp_path / "out"))
            assert sys.excepthook is hook, "a run never swaps sys.excepthook"
            raise ValueError("boom")
    text = (tmp_path / "out" / "run.log").read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text and text.count("ValueError: boom") == 1
    assert not state.current().active and state.current().run_log.file is None, "the run released run.log"
    state.begin()  # for the fixture's end


def test_a_typed_error_is_one_error_line_in_run_log(tmp_path):
    state.end(state.current())
    with pytest.raises(ConfigError):
        with Run({"output_dir": str(tmp_path / "out")}):
            attach_run_log(str(tmp_path / "out"))
            raise ConfigError("learning_rate must be > 0, got -1")
    assert run_log_lines(tmp_path / "out")[-1] == "error: learning_rate must be > 0, got -1"
    state.begin()


def test_temporary_checkpoint_paths_never_reach_console_or_run_log(tmp_path, capsys):
    attach_run_log(str(tmp_path))
    log("Model weights saved in out/.tmp-checkpoint-75-9382/model_state.pdparams")
    log("wrote out/trainer_state.json.tmp9382")
    close_run_log()
    console = capsys.readouterr().out
    for text in (console, (tmp_path / "run.log").read_text(encoding="utf-8")):
        assert ".tmp" not in text
        assert "out/checkpoint-75/model_state.pdparams" in text and "out/trainer_state.json\n" in text


def test_other_ranks_are_silent(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")
    log("rank 1 speaks")
    warn("rank 1 warns")
    with progress_bar(10, "train") as bar:
        bar.update(10)
    assert attach_run_log(str(tmp_path / "out")) is None and not (tmp_path / "out").exists()
    assert write_results(str(tmp_path), {"train_loss": 1.0}) == {} and list(tmp_path.iterdir()) == []
    assert plot_training_curves(str(tmp_path)) is None
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    error("rank 1 dies")  # ... except to say why it stops
    assert "error: rank 1 dies" in capsys.readouterr().err


def test_other_ranks_keep_library_warnings_on_their_own_stderr(capsys, monkeypatch):
    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")
    _show_warning(UserWarning("gloo is slow"), UserWarning, "/x/lib.py", 7)
    captured = capsys.readouterr()
    assert captured.out == "" and re.fullmatch(STAMP + r"rank 1 WARNING: UserWarning: gloo is slow \(lib\.py:7\)\n", captured.err)


def test_debug_lines_only_with_the_debug_switch(capsys, monkeypatch):
    debug("paddlenlp: Configuration saved in x")
    assert capsys.readouterr().out == ""
    monkeypatch.setenv(DEBUG_ENV, "1")
    debug("paddlenlp: Configuration saved in x")
    assert re.fullmatch(STAMP + "DEBUG paddlenlp: Configuration saved in x\n", capsys.readouterr().out)


# ---------------------------------------------------------------------------- progress bars
def test_plain_bar_prints_a_line_every_tenth_with_rate_and_eta_then_a_final_line(capsys):
    clock = Clock()
    bar = ProgressBar(100, "train", mode="plain", clock=clock)
    for _ in range(100):
        clock.t += 1.0
        bar.update(1)
        if bar.n == 50:
            bar.set_postfix(loss="2.5000", lr="1.00e-04")
    bar.close()
    out = capsys.readouterr().err
    assert "\r" not in out and "\x1b" not in out
    lines = out.splitlines()
    assert len(lines) == 10, lines  # 10%, 20%, ... 90%, and the final line
    assert re.fullmatch(STAMP + r"train: 10/100 \(10%\) 1\.00 it/s, ETA 1m30s", lines[0])
    assert lines[5].endswith("train: 60/100 (60%) 1.00 it/s, ETA 40.0s, loss=2.5000, lr=1.00e-04")
    assert re.fullmatch(STAMP + r"train: 100/100 it in 1m40s \(1\.00 it/s\), loss=2\.5000, lr=1\.00e-04", lines[-1])


def test_plain_bar_on_a_slow_run_prints_every_30_seconds(capsys):
    clock = Clock()
    bar = ProgressBar(1000, "train", mode="plain", clock=clock)
    for _ in range(10):  # 10 steps of 10 s: 1% of the total, but 100 s
        clock.t += 10.0
        bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert [re.search(r"train: (\d+)/", line).group(1) for line in lines] == ["3", "6", "9"]
    assert "10.00 s/it" in lines[0] and "ETA 2h46m10s" in lines[0]


def test_plain_quick_bar_prints_only_its_final_line(capsys):
    clock = Clock()
    with ProgressBar(8, "eval", mode="plain", clock=clock) as bar:
        for _ in range(8):
            clock.t += 0.05
            bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].endswith("eval: 8/8 it in 0.4s (20.0 it/s)")


def test_resumed_bar_counts_rate_and_eta_from_where_it_started(capsys):
    clock = Clock()
    bar = ProgressBar(100, "train", initial=50, mode="plain", clock=clock)
    for _ in range(10):
        clock.t += 2.0
        bar.update(1)
    line = capsys.readouterr().err.splitlines()[0]
    assert "train: 60/100 (60%) 0.50 it/s" in line or "train: 60/100 (60%) 2.00 s/it" in line
    assert "ETA 1m20s" in line


def test_bar_on_a_terminal_is_tqdm_on_stderr_and_ends_with_one_log_line(capsys):
    bar = ProgressBar(5, "train", mode="bar")
    for _ in range(5):
        bar.update(1)
    bar.set_postfix(loss="1.0")
    bar.close()
    err = capsys.readouterr().err
    assert "\r" in err and "5/5" in err, "a tqdm bar, redrawn"
    assert re.search(STAMP + r"train: 5/5 it in \S+ \(.*\), loss=1\.0\n$", err), "then one line, like a plain bar's last"


def test_progress_bar_picks_plain_lines_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    assert progress_bar(10, "x").mode == "plain"  # pytest's capture is not a terminal
    monkeypatch.setenv(PROGRESS_ENV, "off")
    bar = progress_bar(10, "x")
    bar.update(10)
    bar.close()
    assert bar.mode == "off" and capsys.readouterr() == ("", "")


def test_plain_progress_lines_are_in_run_log(tmp_path, capsys):
    attach_run_log(str(tmp_path))
    clock = Clock()
    with ProgressBar(20, "train", mode="plain", clock=clock) as bar:
        for _ in range(20):
            clock.t += 1.0
            bar.update(1)
    close_run_log()
    captured = capsys.readouterr()
    assert captured.out == "", "progress goes to stderr, with the bar: a CLI's stdout is its data"
    assert run_log_lines(tmp_path)[1:] == captured.err.splitlines()


# ---------------------------------------------------------------------------- result files
def test_write_results_merges_all_results_and_splits_by_prefix(tmp_path):
    (tmp_path / "all_results.json").write_text(json.dumps({"earlier": 1, "eval_rougeL": 1.0}))
    merged = write_results(str(tmp_path), {
        "train_loss": np.float32(0.5), "train_runtime": 12.5, "eval_rougeL": np.float64(30.25), "eval_step": 20,
        "test_rougeL": 28.0, "predict_gen_len": 13.0, "epoch": 3.0, "final_model": "out/checkpoint-20",
    })

    def read(name):
        return json.loads((tmp_path / name).read_text())

    assert merged == read("all_results.json")
    assert merged["earlier"] == 1 and merged["eval_rougeL"] == 30.25 and merged["train_loss"] == 0.5, "numbers, not reprs"
    assert read("train_results.json") == {"train_loss": 0.5, "train_runtime": 12.5}
    assert read("eval_results.json") == {"eval_rougeL": 30.25, "eval_step": 20}
    assert read("predict_results.json") == {"test_rougeL": 28.0, "predict_gen_len": 13.0}
    write_results(str(tmp_path), {"test_rouge1": 30.0})  # later results merge into each file
    assert read("predict_results.json") == {"test_rougeL": 28.0, "predict_gen_len": 13.0, "test_rouge1": 30.0}
    assert read("all_results.json")["train_loss"] == 0.5
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_summary_lines_name_steps_speed_best_test_and_final_model():
    lines = summary_lines({
        "train_steps": 378, "epoch": 6.0, "train_runtime": 55.24, "train_tokens_per_second": 3702.1, "train_loss": 0.123456,
        "metric_for_best": "rougeL", "best_metric": 99.9, "best_step": 378, "best_checkpoint": "out/checkpoint-378",
        "eval_rouge1": 99.95, "eval_rougeL": 99.9, "eval_runtime": 3.2, "final_model_step": 378,
        "test_rougeL": 97.5, "final_model": "out", "train_samples_per_second": None,
    })
    assert lines == [
        "summary:",
        "  trained      378 steps (6 epochs) in 55.2s, 3,702 tokens/s, final loss 0.1235",
        "  best         rougeL=99.9 at step 378 (out/checkpoint-378)",
        "  dev          rouge1=99.95, rougeL=99.9 (step 378)",
        "  test         rougeL=97.5",
        "  final model  out (step 378)",
    ]
    assert summary_lines({}) == []
    assert summary_lines({"train_runtime": 4000}) == ["summary:", "  trained      in 1h06m40s"]


def test_summary_lines_name_how_the_numbers_were_computed():
    """A string result (eval_rouge_style) labels its split's numbers, and the best when it is one of them."""
    results = {"metric_for_best": "rougeL", "best_metric": 38.1, "best_step": 10, "eval_rouge1": 41.0, "eval_rougeL": 38.1,
               "eval_rouge_style": "chars", "eval_loss": 2.5, "final_model_step": 10, "test_rougeL": 37.0,
               "test_rouge_style": "chars"}
    assert summary_lines(results)[1:] == [
        "  best         rougeL=38.1 at step 10 (rouge_style chars)",
        "  dev          rouge1=41, rougeL=38.1, loss=2.5 (rouge_style chars, step 10)",
        "  test         rougeL=37 (rouge_style chars)",
    ]
    by_loss = summary_lines({**results, "metric_for_best": "loss", "best_metric": 2.5})
    assert by_loss[1] == "  best         loss=2.5 at step 10", "the ROUGE style says nothing about the loss"


def test_read_jsonl_skips_a_line_cut_in_half(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "lo', encoding="utf-8")
    assert read_jsonl(str(path)) == [{"step": 1}, {"step": 2}]
    assert read_jsonl(str(tmp_path / "missing.jsonl")) == []


# ---------------------------------------------------------------------------- VisualDL
def visualdl_scalars(logdir, tag):
    """[(step, value)] of one tag, as VisualDL's own reader (the one its UI uses) returns them."""
    from visualdl import LogReader

    reader = LogReader(logdir=str(logdir))
    runs = reader.runs()
    assert len(runs) == 1, runs
    return [(row[0], row[3]) for row in reader.get_log_data("scalar", runs[0], tag.replace("/", "%"))]


def visualdl_texts(logdir, tag):
    from visualdl import LogReader

    reader = LogReader(logdir=str(logdir))
    return [t.text.encoded_text_string for t in reader.get_log_data("text", reader.runs()[0], tag)]


CONFIG = {"learning_rate": 1e-3, "model_config": {"d_model": 32}, "use_amp": False, "report_to": "visualdl", "output_dir": "x"}


def test_visualdl_scalars_and_config_read_back_with_visualdl_reader(tmp_path):
    rep = open_reporting(["visualdl"], CONFIG, str(tmp_path))
    assert rep.wandb_run_id is None and rep.wandb_run is None
    for step in (1, 2, 3):
        rep.scalars({"train/loss": 4.0 - step, "train/lr": 1e-3 / step, "train/tokens_per_s": 1000.0 + step}, step)
    rep.scalars({"eval/rougeL": np.float32(12.5), "eval/gen_len": 13}, 3)
    rep.table("eval/samples", ["a", "b"], [[1, 2]], 3)  # wandb only: nothing in VisualDL, no error
    rep.summary({"best_rougeL": 12.5, "best_step": 3})
    rep.close()
    rep.close()  # idempotent
    logdir = tmp_path / "visualdl"
    assert visualdl_scalars(logdir, "train/loss") == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert [s for s, _ in visualdl_scalars(logdir, "train/lr")] == [1, 2, 3]
    assert visualdl_scalars(logdir, "train/tokens_per_s") == [(1, 1001.0), (2, 1002.0), (3, 1003.0)]
    assert visualdl_scalars(logdir, "eval/rougeL") == [(3, 12.5)] and visualdl_scalars(logdir, "eval/gen_len") == [(3, 13.0)]
    assert json.loads(visualdl_texts(logdir, "config")[0]) == CONFIG
    assert visualdl_texts(logdir, "summary") == ["best_rougeL: 12.5\nbest_step: 3"]
    from visualdl import LogReader

    hparams = LogReader(file_path=str(logdir / os.listdir(logdir)[0])).get_data("hyper_parameters", "hparam")[0].hparam
    assert {h.name for h in hparams.hparamInfos} >= {"learning_rate", "model_config.d_model", "use_amp"}
    assert [m.name for m in hparams.metricInfos] == ["eval/rougeL", "eval/gen_len"]


def test_a_label_goes_beside_the_curves_not_into_them(tmp_path):
    """eval/rouge_style: a VisualDL text when it changes, wandb's run summary; never a scalar or an hparams metric."""
    rep = open_reporting(["visualdl"], CONFIG, str(tmp_path))
    rep.wandb_run = run = FakeWandbRun()
    for step in (2, 4):
        rep.scalars({"eval/rougeL": float(step), "eval/rouge_style": "chars"}, step)
    rep.scalars({"eval/rougeL": 5.0, "eval/rouge_style": "words"}, 6)
    rep.summary({"best_rougeL": 5.0})
    rep.close()
    logdir = tmp_path / "visualdl"
    assert visualdl_scalars(logdir, "eval/rougeL") == [(2, 2.0), (4, 4.0), (6, 5.0)]
    assert visualdl_texts(logdir, "eval%rouge_style") == ["chars", "words"]  # VisualDL stores "/" as "%"
    assert [data for _, data in run.logged] == [{"eval/rougeL": 2.0}, {"eval/rougeL": 4.0}, {"eval/rougeL": 5.0}]
    assert run.summary == {"eval/rouge_style": "words", "best_rougeL": 5.0}
    from visualdl import LogReader

    hparams = LogReader(file_path=str(logdir / os.listdir(logdir)[0])).get_data("hyper_parameters", "hparam")[0].hparam
    assert [m.name for m in hparams.metricInfos] == ["eval/rougeL"]


def test_visualdl_on_resume_keeps_one_run_without_the_replayed_steps(tmp_path):
    rep = open_reporting(["visualdl"], CONFIG, str(tmp_path))
    for step in range(1, 7):  # the first run reached step 6; its last checkpoint is step 4
        rep.scalars({"train/loss": float(step)}, step)
    rep.scalars({"eval/rougeL": 10.0}, 4)
    rep.flush()  # then it was killed: no close
    rep = open_reporting(["visualdl"], CONFIG, str(tmp_path), resume_step=4)
    for step in range(5, 9):
        rep.scalars({"train/loss": 100.0 + step}, step)
    rep.scalars({"eval/rougeL": 20.0}, 8)
    rep.close()
    logdir = tmp_path / "visualdl"
    assert len(os.listdir(logdir)) == 1, "one record file: the reader shows only the newest of a directory"
    assert visualdl_scalars(logdir, "train/loss") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 105.0), (6, 106.0), (7, 107.0), (8, 108.0)]
    assert visualdl_scalars(logdir, "eval/rougeL") == [(4, 10.0), (8, 20.0)]
    assert len(visualdl_texts(logdir, "config")) == 1


def test_visualdl_new_run_in_the_same_second_gets_a_later_file(tmp_path):
    first = open_reporting(["visualdl"], CONFIG, str(tmp_path))
    first.scalars({"train/loss": 1.0}, 1)
    first.close()
    second = open_reporting(["visualdl"], CONFIG, str(tmp_path))  # overwrite: a new run, same dir
    second.scalars({"train/loss": 2.0}, 1)
    second.close()
    names = sorted(os.listdir(tmp_path / "visualdl"))
    assert len(names) == 2 and visualdl_scalars(tmp_path / "visualdl", "train/loss") == [(1, 2.0)]
    assert _next_record_file(["vdlrecords.9999999999.log"]) == "vdlrecords.10000000000.log"


def test_visualdl_resume_from_a_file_cut_mid_record_keeps_what_is_readable(tmp_path):
    rep = open_reporting(["visualdl"], CONFIG, str(tmp_path))
    for step in range(1, 5):
        rep.scalars({"train/loss": float(step)}, step)
    rep.close()
    path = tmp_path / "visualdl" / os.listdir(tmp_path / "visualdl")[0]
    path.write_bytes(path.read_bytes()[:-5])  # a kill mid-write
    rep = open_reporting(["visualdl"], CONFIG, str(tmp_path), resume_step=4)
    rep.close()
    assert visualdl_scalars(tmp_path / "visualdl", "train/loss") == [(1, 1.0), (2, 2.0), (3, 3.0)]


def test_no_targets_is_a_reporting_that_does_nothing(tmp_path):
    rep = open_reporting([], CONFIG, str(tmp_path))
    rep.scalars({"train/loss": 1.0}, 1)
    rep.table("t", ["a"], [[1]], 1)
    rep.summary({"x": 1})
    rep.flush()
    rep.close()
    assert rep.wandb_run_id is None and list(tmp_path.iterdir()) == []
    assert parse_targets("wandb, visualdl") == ["wandb", "visualdl"] and parse_targets("none") == []
    with pytest.raises(ValueError, match="tensorboard"):
        open_reporting(["tensorboard"], CONFIG, str(tmp_path))


class FakeWandbRun:
    """What Reporting uses of a wandb run: id, step, log, summary, finish."""

    def __init__(self, step=0):
        self.id, self.step, self.logged, self.summary, self.finished = "abc123", step, [], {}, False

    def log(self, data, step):
        self.logged.append((step, data))
        self.step = max(self.step, step)

    def finish(self):
        self.finished = True


def test_wandb_steps_replayed_after_a_resume_are_not_sent_again(capsys):
    run = FakeWandbRun(step=6)  # an online run resumed from the checkpoint at step 4 already has step 6
    rep = Reporting(wandb_run=run)
    assert rep.wandb_run_id == "abc123"
    for step in (5, 6, 7):
        rep.scalars({"train/loss": np.float32(step)}, step)
    rep.summary({"best_rougeL": np.float64(1.5)})
    rep.close()
    assert [s for s, _ in run.logged] == [6, 7] and run.logged[0][1] == {"train/loss": 6.0}
    assert type(run.logged[0][1]["train/loss"]) is float and run.summary == {"best_rougeL": 1.5} and run.finished
    assert capsys.readouterr().out.count("not sent again") == 1


# ---------------------------------------------------------------------------- training curves
def write_logs(out, train_steps=(10, 20, 30), eval_steps=(15, 30)):
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train_log.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"step": s, "epoch": s / 63, "loss": 6.0 - s / 10, "lr": 1e-3 * (1 - s / 40), "tokens_per_s": 3700.0}) + "\n" for s in train_steps)
    with open(out / "metrics.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"step": s, "rouge1": s / 2, "rougeL": s / 3, "gen_len": 13.0}) + "\n" for s in eval_steps)
        f.write(json.dumps({"step": eval_steps[-1], "split": "test", "rouge1": 1.0, "rougeL": 1.0, "test_only": 5}) + "\n")
        f.write('{"step": 40, "rou')  # a kill mid-line


def test_curve_panels_read_train_and_dev_records_and_skip_test_results(tmp_path):
    write_logs(tmp_path)
    panels = training_curve_panels(str(tmp_path))
    assert [p[0] for p in panels] == ["train loss", "learning rate", "eval rouge1", "eval rougeL", "eval gen_len"]
    assert panels[0][1:3] == ([10, 20, 30], [5.0, 4.0, 3.0])
    assert panels[3][1:3] == ([15, 30], [5.0, 10.0]), "the test record at step 30 is not a dev point"


def test_plot_training_curves_writes_a_png_with_the_best_step(tmp_path):
    import matplotlib.image

    write_logs(tmp_path)
    (tmp_path / "trainer_state.json").write_text(json.dumps({"best_checkpoint": str(tmp_path / "checkpoint-30"), "metric_for_best": "rougeL"}))
    path = plot_training_curves(str(tmp_path))
    assert path == str(tmp_path / "training_curves.png")
    height, width, _ = matplotlib.image.imread(path).shape
    assert width > 1000 and height > 600
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
    other = plot_training_curves(str(tmp_path), out_path=str(tmp_path / "c.png"), best_step=15)
    assert other == str(tmp_path / "c.png") and os.path.getsize(other) > 10000


def test_plot_training_curves_with_missing_empty_or_single_point_logs(tmp_path):
    assert plot_training_curves(str(tmp_path / "nothing")) is None
    (tmp_path / "train_log.jsonl").write_text("")
    (tmp_path / "metrics.jsonl").write_text("")
    assert plot_training_curves(str(tmp_path)) is None and not (tmp_path / "training_curves.png").exists()
    write_logs(tmp_path, train_steps=(1,), eval_steps=(1,))
    assert plot_training_curves(str(tmp_path), best_step=1) is not None
    (tmp_path / "train_log.jsonl").unlink()
    assert plot_training_curves(str(tmp_path)) is not None, "eval records alone still draw"


# ---------------------------------------------------------------------------- library chatter (subprocess)
QUIET_PROBE = r"""
import os, sys, warnings
from paddle_finetune.reporting.console import log, quiet_libraries
from paddle_finetune.runtime.environment import record_launch_env
record_launch_env()  # what run_main does first: before paddle (zlib on paddle 2.6)
quiet_libraries()
import paddle
from paddlenlp.transformers import BartConfig, BartForConditionalGeneration
from paddlenlp.utils.log import logger
model = BartForConditionalGeneration(BartConfig(vocab_size=40, d_model=16, encoder_layers=1, decoder_layers=1,
    encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, max_position_embeddings=32))
tmp = os.path.join({out!r}, ".tmp-checkpoint-3-4242")
model.save_pretrained(tmp)
BartForConditionalGeneration.from_pretrained(tmp)
logger.warning("a paddlenlp warning")
warnings.warn("a python warning")
log("done")
"""


def run_quiet_probe(tmp_path, **env):
    script = tmp_path / "probe.py"
    script.write_text(QUIET_PROBE.format(out=str(tmp_path)), encoding="utf-8")
    return subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env}, cwd=str(tmp_path))


def test_quiet_libraries_routes_paddlenlp_and_python_warnings_into_our_log(tmp_path):
    result = run_quiet_probe(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    everything = result.stdout + result.stderr
    for noise in ("Configuration saved", "Model weights saved", "Loading weights file", ".tmp-checkpoint", "\x1b[",
                  "No ccache found", "Setuptools is replacing distutils", "PyTorch version"):
        assert noise not in everything, noise
    lines = result.stdout.splitlines()
    assert any(re.fullmatch(STAMP + "WARNING: paddlenlp: a paddlenlp warning", line) for line in lines), lines
    assert any(re.fullmatch(STAMP + r"WARNING: UserWarning: a python warning \(probe\.py:\d+\)", line) for line in lines), lines
    assert result.stderr.strip() == "", result.stderr


def test_quiet_libraries_debug_switch_shows_the_chatter_with_final_paths(tmp_path):
    result = run_quiet_probe(tmp_path, **{DEBUG_ENV: "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"DEBUG paddlenlp: Model weights saved in {tmp_path}/checkpoint-3/model_state.pdparams" in result.stdout
    assert ".tmp-checkpoint" not in result.stdout + result.stderr
