"""Issue #6 bad input: each case through train.py's real command line (in this process), stopped before
training with the file and line (or key) named; --skip_bad_rows=True skips and counts instead."""
import json
import os

from paddle_finetune.paths import PROJECT_ROOT
import pytest
from helpers import run_entry

ROOT = PROJECT_ROOT
GOOD = [{"content": f"第{i}条新闻的正文内容，讲述了一件事情。", "title": f"第{i}条标题"} for i in range(12)]
TINY = ("--model_config={'d_model': 16, 'encoder_layers': 1, 'decoder_layers': 1, 'encoder_attention_heads': 2, "
        "'decoder_attention_heads': 2, 'encoder_ffn_dim': 32, 'decoder_ffn_dim': 32, 'max_position_embeddings': 64}")


def jsonl(rows):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def with_bad_line(bad):
    """Good rows with `bad` (bytes) as line 3."""
    lines = jsonl(GOOD).splitlines(keepends=True)
    return b"".join(lines[:2] + [bad + b"\n"] + lines[2:])


# case -> (train file bytes, extra args, expected message parts; "{path}" is the train file)
CASES = {
    "malformed_json": (with_bad_line(b'{"content": "oops", "title": '), [], ["{path}:3: malformed JSON"]),
    "missing_column": (with_bad_line('{"content": "正文", "headline": "题"}'.encode()), [],
                       ["{path}:3: missing column 'title'", "'headline'"]),
    "empty_source": (with_bad_line('{"content": "  ", "title": "题"}'.encode()), [], ["{path}:3: empty source (column 'content')"]),
    "empty_target": (with_bad_line('{"content": "正文", "title": ""}'.encode()), [], ["{path}:3: empty target (column 'title')"]),
    "not_utf8": (with_bad_line('{"content": "正文", "title": "标题"}'.encode("gbk")), [], ["{path}:3: text is GBK-encoded, not UTF-8", "iconv -f GBK -t UTF-8"]),
    "empty_file": (b"", [], ["{path}: file is empty"]),
    "max_below_min_target": (jsonl(GOOD), ["--max_target_length=4", "--min_target_length=8"],
                             ["max_target_length (4) < min_target_length (8)"]),
    "missing_model_dir": (jsonl(GOOD), ["--pretrained_model=./no/such/model_dir"],
                          ["pretrained_model directory not found: ./no/such/model_dir"]),
}


def command(train_file, out, extra):
    return ["train.py", f"--train_file={train_file}", "--dev_file=", f"--output_dir={out}", "--device=cpu", "--report_to=none", *extra]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    done = {}
    for name, (content, extra, _) in CASES.items():
        path = base / f"{name}.jsonl"
        path.write_bytes(content)
        result = run_entry(command(path, base / f"out-{name}", extra), env={"WANDB_MODE": "disabled"})
        done[name] = (str(path), base / f"out-{name}", result.returncode, result.stdout, result.stderr)
    return done


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_stops_before_training_naming_file_and_line(results, case):
    path, out, rc, stdout, stderr = results[case]
    assert rc == 2
    for part in CASES[case][2]:
        assert part.format(path=path) in stderr, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in stderr
    assert "training:" not in stdout
    assert not os.path.exists(out), "a bad-input run leaves output_dir untouched, so the fixed rerun is not refused"


def test_skip_bad_rows_skips_and_counts_them(tmp_path):
    bad_lines = [b'{"content": "oops", "title": ', '{"content": "正文", "headline": "题"}'.encode(),
                 '{"content": "  ", "title": "题"}'.encode(), '{"content": "正文", "title": "标题"}'.encode("gbk")]
    lines = jsonl(GOOD).splitlines(keepends=True)
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"".join(lines[:3] + [b + b"\n" for b in bad_lines] + lines[3:]))
    result = run_entry(command(path, tmp_path / "out", [TINY, "--skip_bad_rows=True", "--max_steps=1", "--train_batch_size=4",
                                                        "--save_steps=1", "--max_source_length=32", "--max_target_length=8"]),
                       env={"WANDB_MODE": "disabled"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"skip_bad_rows: skipped 4 bad row(s) in {path}; first: {path}:4: malformed JSON" in result.stdout
    assert "data: train 12" in result.stdout
