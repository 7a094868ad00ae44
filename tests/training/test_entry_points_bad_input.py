"""Issue #11 through the real entry points (python train*.py ...), as a user runs them, for the cases no
other entry-point test covers (tests/configuration/test_cli.py, tests/data/test_bad_rows.py,
tests/checkpoints/test_output_dir.py, tests/trainers/ hold the rest).

A refused run exits 2 with exactly one `error:` line naming the file:line, key or value, no traceback,
and leaves output_dir byte-identical: a fresh output_dir is not created, and a previous run's files
survive even with --overwrite_output_dir=True. A user-data run evaluates on the user's rows only.

Every run here is independent, so the module fixture starts them all at once (a few at a time, one math
thread each) and the tests read the results.
"""
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from helpers import ROOT, read_jsonl, run_entry

TINY = {
    "train.py": "--model_config={'d_model': 32, 'encoder_layers': 1, 'decoder_layers': 1, 'encoder_attention_heads': 2, "
                "'decoder_attention_heads': 2, 'encoder_ffn_dim': 64, 'decoder_ffn_dim': 64}",
    **{prog: "--model_config={'hidden_size': 32, 'num_hidden_layers': 1, 'num_attention_heads': 2, 'intermediate_size': 64}"
       for prog in ("train_classification.py", "train_mlm.py", "train_clm.py")},
}
FAST = ["--device=cpu", "--report_to=none", "--max_steps=1", "--save_steps=1", "--train_batch_size=8", "--eval_batch_size=8"]
SAMPLE = os.path.join(ROOT, "datasets")

USER_SUMMARIES = [{"content": f"用户第{i}条正文，讲述了城市{i}的新闻内容。", "title": f"用户标题{i}"} for i in range(20)]
USER_LABELLED = [(f"用户文本{i}号，关于{'比赛' if i % 2 else '股票'}", "好" if i % 2 else "坏") for i in range(20)]
USER_LINES = [f"用户语料第{i}行，内容是城市的新闻。" for i in range(40)]
# a previous run's files in an output_dir the refused run is pointed at (with --overwrite_output_dir=True): an
# output_dir of the previous version (no ownership record), so overwrite would remove them once every check passed.
# (A user's file among them refuses the run before anything else: tests/training/test_ownership_cases.py.)
PREVIOUS_RUN = {"checkpoint-3/model.safetensors": b"old weights", "checkpoint-3/CHECKPOINT_COMPLETE": b"step 3\n",
                "train_log.jsonl": b'{"step": 3, "loss": 1.0}\n', "train_config.json": b'{"old": true}\n',
                "vocab.txt": b"[PAD]\nold\n"}


def jsonl(rows):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def tsv(header, rows):
    return "".join("\t".join(r) + "\n" for r in ([header] if header else []) + rows)


def snapshot(directory):
    """Every file's bytes and every directory, relative to `directory` (None when it does not exist)."""
    if not os.path.exists(directory):
        return None
    found = {}
    for d, dirs, files in os.walk(directory):
        for name in dirs:
            found[os.path.relpath(os.path.join(d, name), directory) + "/"] = None
        for name in files:
            with open(os.path.join(d, name), "rb") as f:
                found[os.path.relpath(os.path.join(d, name), directory)] = f.read()
    return found


# ---------------------------------------------------------------------------- files
def make_files(d):
    """{name: path} of the data every case reads."""
    files = {}

    def put(name, text):
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        files[name] = str(path)

    put("mine.jsonl", jsonl(USER_SUMMARIES))
    rows = [[r["content"], r["title"]] for r in USER_SUMMARIES]
    put("extra_tab.tsv", tsv(["content", "title"], rows[:3] + [["坏行正文", "标题", "多出的一列"]] + rows[3:]))  # line 5
    put("dup_header.csv", "content,title,title\n" + "".join(f"{c},{t},x\n" for c, t in rows))
    lines = json.dumps(USER_SUMMARIES, ensure_ascii=False, indent=2).split("\n")
    assert lines[42].startswith('    "content": "用户第10条')
    lines[42] = lines[42].rstrip(",")  # line 43 loses its comma: the parser notices on line 44
    put("pretty.json", "\n".join(lines))
    nan = jsonl(USER_SUMMARIES).splitlines()
    nan[2] = nan[2].replace('"用户标题2"', "NaN")
    put("nan.jsonl", "\n".join(nan) + "\n")
    null = jsonl(USER_SUMMARIES).splitlines()
    null[2] = null[2].replace('"用户标题2"', "null")
    put("null.jsonl", "\n".join(null) + "\n")
    both = jsonl(USER_SUMMARIES).splitlines()
    both[2] = both[2].replace('"用户标题2"', "null")
    both[6] = both[6].replace('"用户标题6"', "NaN")
    put("nan_and_null.jsonl", "\n".join(both) + "\n")
    # a CSV with a quoted field holding a line break and a field over csv's default 131072-character limit
    long_row = ["长" * 140_000, "很长的正文"]
    with open(d / "user.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "summary"])
        writer.writerow(["第一行正文\n第二行正文", "两行的摘要"])
        writer.writerow(long_row)
        writer.writerows([[c, t] for c, t in rows])
    files["user.csv"] = str(d / "user.csv")

    put("cls_extra_tab.tsv", tsv(["text", "label"], [list(r) for r in USER_LABELLED[:5]] + [["坏行", "好", "新类"]]
                                 + [list(r) for r in USER_LABELLED[5:]]))  # line 7
    put("cls_dev.tsv", tsv(["text", "label"], [["另一条关于比赛的文本", "好"], ["另一条关于股票的文本", "坏"]]))
    put("cls_dev_unknown.tsv", tsv(["text", "label"], [["另一条关于比赛的文本", "好"], ["没见过的标签", "maybe"]]))
    put("cls_headerless_extra_tab.tsv", tsv(None, [[str(i), t, y] for i, (t, y) in enumerate(USER_LABELLED[:4])]
                                            + [["4", "多一个制表符", "好", "新类"]]
                                            + [[str(i), t, y] for i, (t, y) in enumerate(USER_LABELLED[4:], start=5)]))
    put("lm.txt", "".join(line + "\n" for line in USER_LINES))
    put("lm.csv", "id,text\n" + "".join(f"{i},{line}\n" for i, line in enumerate(USER_LINES)))
    put("a_file", "not a directory\n")
    # pretrained_model='../../../etc' from a directory three levels down: an existing directory that is no model
    put("etc/passwd", "root:x:0:0\n")
    (d / "a" / "b" / "c").mkdir(parents=True)
    files["nested_cwd"] = str(d / "a" / "b" / "c")
    return files


def make_pretrained_dirs(d):
    """Tiny Paddle models with 32 positions and a char vocab, saved as a user's local pretrained dirs."""
    import paddle
    from paddlenlp.transformers import (BartConfig, BartForConditionalGeneration, BertConfig, BertForMaskedLM,
                                        BertTokenizer, GPTConfig, GPTForCausalLM)

    from paddle_finetune.data.text import write_char_vocab

    texts = [r["content"] + r["title"] for r in USER_SUMMARIES] + [t for t, _ in USER_LABELLED] + USER_LINES
    vocab = write_char_vocab(texts, str(d / "vocab" / "vocab.txt"))
    tokenizer = BertTokenizer(vocab_file=vocab)
    size = len(tokenizer.vocab)
    paddle.set_device("cpu")
    paddle.seed(0)
    bert = dict(vocab_size=size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                max_position_embeddings=32)
    models = {
        "bart32": BartForConditionalGeneration(BartConfig(
            vocab_size=size, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32, pad_token_id=0, bos_token_id=2,
            eos_token_id=3, decoder_start_token_id=2, forced_eos_token_id=3)),
        "bert32": BertForMaskedLM(BertConfig(**bert)),
        "gpt32": GPTForCausalLM(GPTConfig(**bert, eos_token_id=3, bos_token_id=3)),
    }
    paths = {}
    for name, model in models.items():
        model.save_pretrained(str(d / name), safe_serialization=True)
        tokenizer.save_pretrained(str(d / name))
        paths[name] = str(d / name)
    return paths


def make_weights_only_hf_bart(d):
    """An HF BART directory as some exports are: config.json and weights, no tokenizer files."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.BartConfig(vocab_size=100, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                     decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                                     max_position_embeddings=64, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                                     decoder_start_token_id=3)
    config.architectures = ["BartForConditionalGeneration"]
    torch.manual_seed(0)
    transformers.BartForConditionalGeneration(config).save_pretrained(str(d / "hf-bart"))
    assert sorted(os.listdir(d / "hf-bart")) == ["config.json", "generation_config.json", "model.safetensors"]
    return str(d / "hf-bart")


# ---------------------------------------------------------------------------- cases
# A refused case: (trainer, args, the exact error line (a str) or the parts it must hold (a list), output_dir mode).
# "{name}" stands for the data file or dir of that name, "{out}" for the case's output_dir.
# mode "new": output_dir does not exist and must not be created; "previous": it holds PREVIOUS_RUN and the
# run gets --overwrite_output_dir=True: every byte must survive.
REFUSED = {
    # CSV/TSV/JSON rules, as training meets them
    "tsv_extra_tab": ("train.py", ["--train_file={extra_tab.tsv}"],
                      "error: {extra_tab.tsv}:5: 3 fields, but the header (line 1) has 2; a tab inside a field, or a missing field?",
                      "previous"),
    "tsv_extra_tab_is_no_new_class": ("train_classification.py", ["--train_file={cls_extra_tab.tsv}", "--dev_file={cls_dev.tsv}"],
                                      "error: {cls_extra_tab.tsv}:7: 3 fields, but the header (line 1) has 2; a tab inside a "
                                      "field, or a missing field?", "previous"),
    "duplicate_header": ("train.py", ["--train_file={dup_header.csv}"],
                         "error: {dup_header.csv}:1: duplicate column name 'title' in the header; rename one of them "
                         "(which column is meant would be ambiguous)", "new"),
    "negative_column_index": ("train.py", ["--train_file={mine.jsonl}", "--text_column=-1", "--summary_column=title"],
                              "error: text_column must be a column name or a 0-based column index: negative indexes are not "
                              "supported (-1 would quietly mean the last column); count from 0 at the left, got -1", "new"),
    "pretty_json_line_44": ("train.py", ["--train_file={pretty.json}"],
                            "error: {pretty.json}:44: malformed JSON (Expecting ',' delimiter at column 5)", "new"),
    "nan_summary": ("train.py", ["--train_file={nan.jsonl}"],
                    "error: {nan.jsonl}:3: target (column 'title') is NaN (a missing value)", "new"),
    "null_summary_overwrite_deletes_nothing": ("train.py", ["--train_file={null.jsonl}"],
                                               "error: {null.jsonl}:3: target (column 'title') is null (a missing value)",
                                               "previous"),
    # config values
    "model_config_value_of_the_wrong_type": ("train.py", ["--model_config={'d_model': 'x'}"],
                                             "error: model_config['d_model'] must be int like BartConfig's default 768, got str 'x'",
                                             "new"),
    "negative_warmup_steps": ("train.py", ["--warmup_steps=-1"], "error: warmup_steps must be >= 0, got -1", "new"),
    "report_to_lists_the_valid_targets": ("train.py", ["--report_to=tensorboard"],
                                          "error: report_to: unknown target 'tensorboard' in 'tensorboard'; valid: wandb, "
                                          "visualdl, or 'none' (from --report_to)", "new"),
    # pretrained_model that is no model: found before the (bad) data is read, from any directory
    "pretrained_model_dir_that_is_no_model": ("train.py", ["--pretrained_model=../../../etc", "--train_file={nan.jsonl}"],
                                              "error: pretrained_model ../../../etc ({etc}) is not a model directory: it has no "
                                              "config.json; give a paddlenlp model name, a Paddle or Hugging Face model "
                                              "directory, a checkpoint-<step> directory or an output_dir", "previous"),
    # range errors found after the data was read: nothing written (train_config.json and vocab.txt were)
    "dev_size_leaves_no_training_rows": ("train.py", ["--train_file={mine.jsonl}", "--dev_size=20"],
                                         "error: dev_size=20 leaves no training rows (the training data has 20)", "previous"),
    "dev_label_not_in_training": ("train_classification.py", ["--train_file={cls_extra_tab.tsv}", "--skip_bad_rows=True",
                                                              "--dev_file={cls_dev_unknown.tsv}"],
                                  "error: {cls_dev_unknown.tsv}: label(s) ['maybe'] not in the training data's labels ['坏', '好']",
                                  "previous"),
    "max_source_length_over_a_pretrained_models_positions": (
        "train.py", ["--pretrained_model={bart32}", "--train_file={mine.jsonl}"],
        "error: max_source_length=192 exceeds the model's max_position_embeddings=32 (pretrained_model '{bart32}')", "previous"),
    "max_seq_length_over_a_pretrained_models_positions": (
        "train_classification.py", ["--pretrained_model={bert32}", "--train_file={cls_extra_tab.tsv}", "--skip_bad_rows=True"],
        "error: max_seq_length=128 exceeds the model's max_position_embeddings=32 (pretrained_model '{bert32}')", "previous"),
    "mlm_block_size_over_a_pretrained_models_positions": (
        "train_mlm.py", ["--pretrained_model={bert32}", "--train_file={lm.txt}"],
        "error: block_size=64 exceeds the model's max_position_embeddings=32 (pretrained_model '{bert32}')", "previous"),
    "clm_block_size_over_a_pretrained_models_positions": (
        "train_clm.py", ["--pretrained_model={gpt32}", "--train_file={lm.txt}"],
        "error: block_size=64 exceeds the model's max_position_embeddings=32 (pretrained_model '{gpt32}')", "previous"),
    # a weights-only HF directory: converted, then the one line says which tokenizer it needs
    "weights_only_hf_dir_needs_a_tokenizer": (
        "train.py", ["--pretrained_model={hf-bart}", "--train_file={mine.jsonl}"],
        "error: pretrained_model {hf-bart}: {hf-bart} has no tokenizer files, so no tokenizer was converted. It needs a "
        "BartForConditionalGeneration tokenizer (vocab_size=100): put vocab.txt (WordPiece) or vocab.json + merges.txt (BPE) "
        "or a tokenizer.json there, or convert it with a tokenizer from an HF tokenizer dir: "
        "python tools/convert_hf_to_paddle.py {hf-bart} {hf-bart}-paddle --tokenizer DIR.", "new"),
    # an output_dir that cannot be written is found before the (bad) data or any model
    **{f"output_dir_under_a_file_{prog[:-3]}": (prog, [f"--train_file={{{bad}}}", "--output_dir={a_file}/out"],
                                                 "error: output_dir {a_file}/out: {a_file} exists and is not a directory", None)
       for prog, bad in (("train.py", "nan.jsonl"), ("train_classification.py", "cls_extra_tab.tsv"),
                         ("train_mlm.py", "nan.jsonl"), ("train_clm.py", "nan.jsonl"))},
}
CWD = {"pretrained_model_dir_that_is_no_model": "nested_cwd"}

# User-data runs that must succeed, evaluating on the user's rows only.
SUCCEEDS = {
    # from another directory, user paths relative to it; a quoted line break and a 140000-character field
    "summarization_dev_size": ("train.py", ["--train_file=user.csv", "--dev_size=4", "--output_dir=out",
                                            "--max_source_length=64", "--max_target_length=8"]),
    "summarization_no_dev": ("train.py", ["--train_file={nan_and_null.jsonl}", "--skip_bad_rows=True", "--max_target_length=8"]),
    "classification_no_dev_by_index": ("train_classification.py", ["--train_file={cls_headerless_extra_tab.tsv}",
                                                                   "--text_column=1", "--label_column=2", "--skip_bad_rows=True"]),
    "mlm_dev_size": ("train_mlm.py", ["--train_file={lm.txt}", "--dev_size=5", "--probe_text="]),
    "clm_no_dev": ("train_clm.py", ["--train_file={lm.csv}", "--sample_prompt="]),
}


def fill(text, files):
    """{name} -> the path of that file (other braces, as in a model_config dict, stay)."""
    return re.sub(r"\{([^{}']+)\}", lambda m: files.get(m.group(1), m.group(0)), text)


def child_env():
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_API_KEY", None)
    return env


def run(argv, cwd):
    """The entry point's real command line, in this process (helpers.run_entry), from cwd."""
    return run_entry([os.path.relpath(argv[0], ROOT), *argv[1:]], cwd=cwd, env={"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("entry")
    files = make_files(base / "data")
    files.update(make_pretrained_dirs(base / "models"))
    files["etc"] = str(base / "data" / "etc")
    try:
        files["hf-bart"] = make_weights_only_hf_bart(base / "hf")
    except pytest.skip.Exception:
        pass
    jobs, outs, before = {}, {}, {}
    for name, (prog, args, _, mode) in REFUSED.items():
        if any("{hf-bart}" in a for a in args) and "hf-bart" not in files:
            continue
        out = base / "out" / name
        if mode == "previous":
            for rel, content in PREVIOUS_RUN.items():
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_bytes(content)
        outs[name] = str(out) if mode else None
        before[name] = snapshot(str(out)) if mode else snapshot(os.path.dirname(files["a_file"]))
        extra = [f"--output_dir={out}"] if mode else []
        extra += ["--overwrite_output_dir=True"] if mode == "previous" else []
        argv = [os.path.join(ROOT, prog), TINY[prog], *FAST, *[fill(a, files) for a in args], *extra]  # the case's args win
        jobs[name] = (argv, files[CWD[name]] if name in CWD else ROOT)
    work = base / "work"  # the user's directory for the run from elsewhere
    work.mkdir()
    shutil.copy(files["user.csv"], work / "user.csv")
    for name, (prog, args) in SUCCEEDS.items():
        out = work / "out" if "--output_dir=out" in args else base / "out" / name
        outs[name] = str(out)
        extra = [] if "--output_dir=out" in args else [f"--output_dir={out}"]
        jobs[name] = ([os.path.join(ROOT, prog), TINY[prog], *FAST, *[fill(a, files) for a in args], *extra],
                      str(work) if "--output_dir=out" in args else ROOT)
    results = {name: run(argv, cwd) for name, (argv, cwd) in jobs.items()}
    return {"files": files, "results": results, "outs": outs, "before": before, "work": str(work)}


def the_error(result):
    """The run's single `error:` line; exit 2, no traceback, nothing after it."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and result.stderr.rstrip().splitlines()[-1] == errors[0]
    return errors[0]


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_run_says_why_in_one_line_and_touches_nothing(world, case):
    if case not in world["results"]:
        pytest.skip("needs torch and transformers to write the HF directory")
    prog, args, expected, mode = REFUSED[case]
    result = world["results"][case]
    error = the_error(result)
    if isinstance(expected, str):
        assert error == fill(expected, world["files"])
    else:
        assert all(fill(part, world["files"]) in error for part in expected), error
    assert "training:" not in result.stdout, "refused before any training step"
    out = world["outs"][case]
    if mode == "new":
        assert not os.path.exists(out), "a refused run must not create output_dir"
    elif mode == "previous":
        assert snapshot(out) == world["before"][case], "a refused run must leave output_dir byte-identical"
    else:
        assert snapshot(os.path.dirname(world["files"]["a_file"])) == world["before"][case], "nothing created next to the file"


def test_the_tokenizer_message_of_a_weights_only_dir_is_said_once(world):
    result = world["results"].get("weights_only_hf_dir_needs_a_tokenizer")
    if result is None:
        pytest.skip("needs torch and transformers to write the HF directory")
    said = (result.stdout + result.stderr).count("has no tokenizer files")
    assert said == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Converting HF checkpoint" in result.stdout  # converted (once, cached) before the tokenizer was looked for


CLAIM_AS_NOBODY = """
import fcntl, os, sys, unicodedata  # what the claim and the error line import late: nobody cannot read the
import tqdm                          # interpreter's own modules
import train, train_utils as tu
os.setgid(65534)  # imports done as root (the interpreter lives under /root), the run as nobody
os.setuid(65534)
sys.argv = ["train.py", *sys.argv[1:]]
tu.run_main(train.main, train.CONFIG, prog="train.py", doc=train.__doc__)
"""


def test_a_read_only_output_dir_is_refused_before_the_data_is_read(world):
    """Root ignores permission bits: as root the run drops to `nobody` once imported (as
    tests/checkpoints/test_output_dir.py claims), so the refusal is the engine's, not an import error."""
    base = tempfile.mkdtemp(prefix="entry-ro-")  # under /tmp: reachable by an unprivileged process
    out = os.path.join(base, "out")
    os.mkdir(out)
    for name in ("train_config.json", "trainer_state.json"):  # an earlier run's (of the previous version: no record)
        with open(os.path.join(out, name), "w") as f:
            f.write('{"old": "run"}\n')
    os.chmod(out, 0o755 if os.geteuid() == 0 else 0o555)
    os.chmod(base, 0o755)
    try:
        args = [f"--train_file={world['files']['nan.jsonl']}", f"--output_dir={out}", "--overwrite_output_dir=True", *FAST]
        if os.geteuid() == 0:
            result = subprocess.run([sys.executable, "-c", CLAIM_AS_NOBODY.format(root=ROOT), *args], cwd=base,
                                    capture_output=True, text=True, timeout=120, env=child_env())
        else:
            result = run([os.path.join(ROOT, "train.py"), *args], base)
        assert the_error(result) == f"error: output_dir {os.path.abspath(out)} is not writable: Permission denied"
        assert "data:" not in result.stdout, "found before any data is read"
        assert sorted(os.listdir(out)) == ["train_config.json", "trainer_state.json"]
        assert open(os.path.join(out, "train_config.json")).read() == '{"old": "run"}\n'
    finally:
        os.chmod(out, 0o700)
        shutil.rmtree(base)


# ---------------------------------------------------------------------------- user data only
def succeeded(world, case):
    result = world["results"][case]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, world["outs"][case]


def sample_texts():
    texts = set()
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl"):
        texts |= {r["content"] for r in read_jsonl(os.path.join(SAMPLE, "sample_summarization", name))}
    return texts


def test_summarization_from_another_directory_holds_out_dev_size_rows_of_the_users_file(world):
    """`python /path/to/train.py --train_file=user.csv --dev_size=4 --output_dir=out` in the user's directory: user
    paths stay relative to it; the dev rows are 4 of the user's rows (the sample's dev set used to leak in); the
    quoted line break and the 140000-character field are read as fields."""
    result, out = succeeded(world, "summarization_dev_size")
    assert out == os.path.join(world["work"], "out") and os.path.isdir(out)
    assert not os.path.exists(os.path.join(ROOT, "out"))
    assert "data: train 18 rows from user.csv\n" in result.stdout
    assert "data: dev 4 rows from the training data, held out (dev_size)\n" in result.stdout
    csv.field_size_limit(1 << 20)
    with open(world["files"]["user.csv"], encoding="utf-8", newline="") as f:
        user = {row["text"] for row in csv.DictReader(f)}
    assert len(user) == 22 and "第一行正文\n第二行正文" in user and "长" * 140_000 in user
    dev = read_jsonl(os.path.join(out, "predictions_dev.jsonl"))
    assert len(dev) == 4 and all(r["source"] in user for r in dev)
    assert not {r["source"] for r in dev} & sample_texts()
    metrics = read_jsonl(os.path.join(out, "metrics.jsonl"))
    assert [m["step"] for m in metrics] == [1] and "rougeL" in metrics[0]
    assert json.loads(open(os.path.join(out, "train_config.json")).read())["train_file"] == "user.csv"


def test_summarization_without_dev_data_evaluates_nothing_and_says_so(world):
    """--train_file alone: no dev evaluation at all (it used to score the sample's dev set); NaN and null
    summaries are bad rows that --skip_bad_rows skips and counts."""
    result, out = succeeded(world, "summarization_no_dev")
    path = world["files"]["nan_and_null.jsonl"]
    assert (f"skip_bad_rows: skipped 2 bad row(s) in {path}; first: {path}:3: target (column 'title') is null "
            "(a missing value)") in result.stdout
    assert f"data: train 18 rows from {path}\n" in result.stdout
    assert ("data: no dev split (no dev_file, dev_size or dataset dev split): no evaluation during training, "
            "and the final model is the last") in result.stdout
    assert "eval at step" not in result.stdout
    assert not os.path.exists(os.path.join(out, "metrics.jsonl")) and not os.path.exists(os.path.join(out, "predictions_dev.jsonl"))
    assert not any(k.startswith("eval_") for k in json.loads(open(os.path.join(out, "all_results.json")).read()))


def test_classification_on_a_headerless_file_without_dev_data(world):
    """A headerless TSV by index and no dev_file: no dev evaluation (it used to read the sample's dev.tsv with
    these indexes and fail on its columns); a row with an extra tab is skipped as bad, not made a new class."""
    result, out = succeeded(world, "classification_no_dev_by_index")
    path = world["files"]["cls_headerless_extra_tab.tsv"]
    assert f"skip_bad_rows: skipped 1 bad row(s) in {path}; first: {path}:5: 4 fields, but the first row (line 1) has 3" \
        in result.stdout
    assert f"data: train 20 rows from {path}\n" in result.stdout
    assert "data: no dev split" in result.stdout and "eval at step" not in result.stdout
    assert "labels (2), training rows each: 坏 (10), 好 (10)" in result.stdout
    label_map = json.loads(open(os.path.join(out, "label_map.json"), encoding="utf-8").read())
    assert label_map["label2id"] == {"坏": 0, "好": 1}
    assert not os.path.exists(os.path.join(out, "predictions_dev.jsonl"))


def test_mlm_holds_out_dev_size_texts_of_the_users_file(world):
    result, out = succeeded(world, "mlm_dev_size")
    path = world["files"]["lm.txt"]
    assert f"data: train 35 rows from {path}\n" in result.stdout
    assert "data: dev 5 rows from the training data, held out (dev_size)\n" in result.stdout
    assert "data: train 35 texts -> 35 examples, dev 5 texts -> 5 examples" in result.stdout  # not the sample's 200
    assert [m["step"] for m in read_jsonl(os.path.join(out, "metrics.jsonl"))] == [0, 1]


def test_clm_without_dev_data_evaluates_nothing_and_says_so(world):
    result, out = succeeded(world, "clm_no_dev")
    path = world["files"]["lm.csv"]
    assert f"data: train 40 rows from {path}\n" in result.stdout
    assert "data: no dev split" in result.stdout and "eval at step" not in result.stdout
    assert re.search(r"data: train 40 texts -> \d+ blocks of 64; device cpu\n", result.stdout)  # no dev blocks
    assert not os.path.exists(os.path.join(out, "metrics.jsonl"))
