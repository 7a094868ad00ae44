"""Issue #21, every numbered case through the real entry points (train.cli / train.run in process, the tools'
main(), subprocesses where a real process is the point: a FIFO that would hang, Ctrl-C): the exit code, the single
`error:` line, and the files untouched.

One tiny real run (module fixture) gives the trained output_dir the cases start from; each case works on a copy."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import train
from helpers import ROOT, read_jsonl, snapshot
from paddle_finetune.checkpoints import ownership
from paddle_finetune.checkpoints.files import COMPLETE_MARKER, TRAINER_STATE_FILE, file_digest
from paddle_finetune.checkpoints.ownership import MANIFEST_FILE
from paddle_finetune.checkpoints.storage import read_checkpoint
from paddle_finetune.commands import convert_hf_to_paddle, predict_classification, predict_summarization

TINY = {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
        "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "max_position_embeddings": 64}
ROWS = [{"content": f"第{i}条新闻讲述城市{i % 5}的故事。", "title": f"城市{i % 5}"} for i in range(16)]


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return str(path)


def settings(data, **overrides):
    return {"train_file": data["train"], "dev_file": data["dev"], "device": "cpu", "report_to": "none",
            "model_config": TINY, "max_source_length": 32, "max_target_length": 6, "train_batch_size": 8,
            "eval_batch_size": 8, "max_steps": 2, "save_steps": 1, "save_total_limit": 0, **overrides}


def argv(config):
    return [f"--{k}={v!r}" if isinstance(v, dict) else f"--{k}={v}" for k, v in config.items()]


def cli(capsys, config):
    """train.py's command line in process: (exit code, stderr lines)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train.cli(argv(config))
    err = capsys.readouterr().err
    return e.value.code, [line for line in err.splitlines() if line.strip()]


def refused(capsys, config, *parts):
    code, lines = cli(capsys, config)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    for part in parts:
        assert part in lines[0], lines[0]
    assert "Traceback" not in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("ownership")
    data = {"train": write_jsonl(d / "train.jsonl", ROWS), "dev": write_jsonl(d / "dev.jsonl", ROWS[:2])}
    trained = str(d / "trained")
    train.run(settings(data, output_dir=trained))
    return {"dir": d, "data": data, "trained": trained}


def copy_of(world, tmp_path, name="copy"):
    path = str(tmp_path / name)
    shutil.copytree(world["trained"], path, symlinks=True)
    return path


# ---------------------------------------------------------------------------- 1-4: output_dir
def test_1_the_current_directory_the_home_directory_and_the_project_are_refused(world, tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    (project / "datasets").mkdir(parents=True)
    for name in ("train.py", "README.md", "datasets/train.jsonl"):
        (project / name).write_text(name)
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    (home / "notes" / "todo.txt").write_text("mine")
    monkeypatch.setattr(ownership, "PROJECT_ROOT", str(project))
    monkeypatch.setenv("HOME", str(home))
    before = snapshot(tmp_path)
    monkeypatch.chdir(project)
    config = settings(world["data"], overwrite_output_dir=True)
    assert refused(capsys, {**config, "output_dir": "."}) == (
        f"error: output_dir . ({project}) is the current directory; nothing was changed. Give the run a folder of its "
        "own, e.g. --output_dir=output/my_run")
    monkeypatch.chdir(tmp_path / "home" / "notes")
    refused(capsys, {**config, "output_dir": str(project)}, "is paddle-finetune's own project folder")
    refused(capsys, {**config, "output_dir": "~"}, f"({home}) is your home directory")
    refused(capsys, {**config, "output_dir": "/"}, "is the filesystem root")
    assert snapshot(tmp_path) == before


def test_2_the_data_folder_is_refused_even_with_overwrite(world, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    files = {"train": write_jsonl(data / "train.jsonl", ROWS), "dev": write_jsonl(data / "dev.jsonl", ROWS[:2])}
    (data / "test.jsonl").write_text("{}\n")
    (data / "unrelated.txt").write_text("mine")
    before = snapshot(tmp_path)
    refused(capsys, {**settings(files, overwrite_output_dir=True), "output_dir": str(data)},
            f"output_dir {data} contains train_file {data}/train.jsonl, an input of this run; nothing was changed")
    # a user's folder holding no input: refused for its files, and overwrite is not suggested
    line = refused(capsys, {**settings(world["data"], overwrite_output_dir=True), "output_dir": str(tmp_path)},
                   "holds files no paddle-finetune run wrote (data/)")
    assert "--overwrite_output_dir" not in line
    assert snapshot(tmp_path) == before


def test_3_eval_only_or_training_from_output_dir_into_itself_is_refused(world, tmp_path, capsys):
    out = copy_of(world, tmp_path)
    before = snapshot(tmp_path)
    for overwrite in (False, True):
        line = refused(capsys, {**settings(world["data"], do_train=False, overwrite_output_dir=overwrite),
                                "pretrained_model": out, "output_dir": out},
                       f"output_dir {out} is pretrained_model {out}, an input of this run")
        assert "--overwrite_output_dir" not in line
    refused(capsys, {**settings(world["data"], overwrite_output_dir=True), "pretrained_model": out + "/checkpoint-2",
                     "output_dir": out}, f"contains pretrained_model {out}/checkpoint-2")
    assert snapshot(tmp_path) == before


def test_4_resume_writes_only_into_an_empty_or_owned_output_dir(world, tmp_path, capsys):
    user = tmp_path / "user"
    user.mkdir()
    (user / "config.json").write_text('{"mine": 1}')
    (user / "vocab.txt").write_text("[PAD]\nmine\n")
    a = copy_of(world, tmp_path, "a")
    b = copy_of(world, tmp_path, "b")
    with open(os.path.join(b, "metrics.jsonl"), "a") as f:
        f.write('{"step": 99, "rougeL": 1.0, "run": "b"}\n')
    before = snapshot(tmp_path)
    refused(capsys, {**settings(world["data"]), "output_dir": str(user), "resume_from_checkpoint": "auto"},
            "holds files no paddle-finetune run wrote (config.json, vocab.txt)")
    line = refused(capsys, {**settings(world["data"]), "output_dir": b,
                            "resume_from_checkpoint": os.path.join(a, "checkpoint-1")},
                   "holds an earlier run's files", "would mix two runs")
    assert snapshot(tmp_path) == before, line
    # with overwrite, b's earlier run goes first: one run's lines in metrics.jsonl, and a note where it came from
    results = train.run(settings(world["data"], output_dir=b, overwrite_output_dir=True, max_steps=3,
                                 resume_from_checkpoint=os.path.join(a, "checkpoint-1")))
    assert results["global_step"] == 3
    assert [r["step"] for r in read_jsonl(os.path.join(b, "metrics.jsonl")) if "split" not in r] == [2, 3]
    log = open(os.path.join(b, "run.log"), encoding="utf-8").read()
    assert f"resuming {os.path.realpath(a)}/checkpoint-1, a checkpoint of another output_dir; this run's files go to {b}" in log
    assert snapshot(a) == {k[2:]: v for k, v in before.items() if k.startswith("a/") and k != "a/"}
    assert snapshot(str(user)) == {k[5:]: v for k, v in before.items() if k.startswith("user/") and k != "user/"}


# ---------------------------------------------------------------------------- 5-6: tools never write over inputs
@pytest.mark.parametrize("tool", [predict_summarization, predict_classification])
def test_5_a_prediction_output_never_overwrites_its_input(world, tmp_path, capsys, tool):
    data = tmp_path / "test.jsonl"
    write_jsonl(data, [{"content": "新闻", "title": "城市"}])
    before = snapshot(tmp_path)
    for extra in ([], ["--overwrite"]):
        assert tool.main([world["trained"], str(data), f"--output={data}", *extra]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert err == [f"error: --output {data} is INPUT {data}: {tool.TOOL} never writes over its input; give another --output"]
    link = tmp_path / "link.jsonl"
    os.symlink(data, link)
    assert tool.main([world["trained"], str(data), f"--output={link}"]) == 2
    assert "is INPUT" in capsys.readouterr().err
    os.remove(link)
    assert snapshot(tmp_path) == before


def test_5_an_existing_output_is_replaced_only_when_the_tool_wrote_it(world, tmp_path, capsys):
    data = write_jsonl(tmp_path / "test.jsonl", [{"content": "新闻", "title": "城市"}])
    mine = tmp_path / "preds.jsonl"
    mine.write_text("my own file\n")
    run = [world["trained"], data, f"--output={mine}"]
    assert predict_summarization.main(run) == 2
    assert "exists and is not an unchanged earlier output of predict_summarization" in capsys.readouterr().err
    assert mine.read_text() == "my own file\n"
    assert predict_summarization.main(run + ["--overwrite"]) == 0
    assert predict_summarization.main(run) == 0, "its own earlier output is replaced"
    (tmp_path / "preds.metrics.json").write_text("edited by hand")
    assert predict_summarization.main(run) == 2, "an edited metrics file is no longer the tool's"
    assert (tmp_path / "preds.metrics.json").read_text() == "edited by hand"
    # another tool's output is not this one's
    assert predict_classification.main([world["trained"], data, f"--output={mine}"]) == 2
    assert f"--output {mine} exists and is not an unchanged earlier output of predict_classification" in capsys.readouterr().err


def test_6_the_converter_never_writes_over_a_trained_output_dir_or_its_source(world, tmp_path, capsys):
    out = copy_of(world, tmp_path)
    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text('{"architectures": ["BertModel"], "model_type": "bert"}')
    (src / "model.safetensors").write_bytes(b"hf weights")
    os.symlink(src, tmp_path / "link_to_src")
    before = snapshot(tmp_path)
    assert convert_hf_to_paddle.main([str(src), out]) == 1
    assert capsys.readouterr().err.startswith(f"error: DST_DIR {out} is not empty and is not an earlier "
                                              f"convert_hf_to_paddle output of {src} (")
    assert convert_hf_to_paddle.main([str(src), str(tmp_path / "link_to_src")]) == 1
    assert capsys.readouterr().err == (f"error: DST_DIR {tmp_path}/link_to_src is the source {src} (real path {src}): "
                                       "convert_hf_to_paddle never writes over its input; pick another DST_DIR\n")
    assert convert_hf_to_paddle.main([str(src), str(src / "paddle")]) == 1
    assert "is inside the source" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------- 7-9: checkpoints that are not what they claim
def forget_record(out):
    os.remove(os.path.join(out, MANIFEST_FILE))  # an output_dir as the previous version left it


def test_7_a_renamed_checkpoint_is_skipped_and_never_rotates_the_new_one_away(world, tmp_path, capsys):
    out = copy_of(world, tmp_path)
    forget_record(out)
    huge = os.path.join(out, "checkpoint-999999999999999999999")
    os.rename(os.path.join(out, "checkpoint-2"), huge)
    results = train.run(settings(world["data"], output_dir=out, resume_from_checkpoint="auto", max_steps=3,
                                 save_total_limit=1))
    log = capsys.readouterr().out
    assert "skipping checkpoint-999999999999999999999: " in log and "its name says step 999999999999999999999, its " \
        "CHECKPOINT_COMPLETE says step 2 (renamed?)" in log
    assert "using checkpoint-1, the newest checkpoint that reads" in log
    assert results["global_step"] == 3
    assert os.path.isdir(os.path.join(out, "checkpoint-3")) and os.path.isdir(huge)
    # in an output_dir with a record, a checkpoint no run recorded there is a stranger: one line, nothing touched
    out2 = copy_of(world, tmp_path, "recorded")
    os.rename(os.path.join(out2, "checkpoint-2"), os.path.join(out2, "checkpoint-999999999999999999999"))
    before = snapshot(out2)
    refused(capsys, settings(world["data"], output_dir=out2, resume_from_checkpoint="auto", max_steps=3),
            "holds files no paddle-finetune run wrote (checkpoint-999999999999999999999/)")
    assert snapshot(out2) == before


def test_8_a_fifo_in_a_checkpoint_falls_back_instead_of_hanging(world, tmp_path):
    out = copy_of(world, tmp_path)
    victim = os.path.join(out, "checkpoint-2", "optimizer.json")
    os.remove(victim)
    os.mkfifo(victim)
    args = argv(settings(world["data"], output_dir=out, resume_from_checkpoint="auto", max_steps=2))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], capture_output=True, text=True,
                            timeout=300, env=env, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"skipping checkpoint-2: {victim}: not a regular file (a FIFO)" in result.stdout
    assert "using checkpoint-1" in result.stdout
    read_checkpoint(os.path.join(out, "checkpoint-2"))  # the run's own checkpoint-2, saved anew in place of the damaged one


def rehash(checkpoint, name, text):
    path = os.path.join(checkpoint, name)
    with open(path, "w") as f:
        f.write(text)
    marker = os.path.join(checkpoint, COMPLETE_MARKER)
    manifest = json.load(open(marker))
    manifest["files"][name] = file_digest(path)
    with open(marker, "w") as f:
        json.dump(manifest, f)


@pytest.mark.parametrize("damage, message", [
    ("deep", "JSON nested deeper than 64 levels"),
    ("step four", "step 'four' is not a whole number"),
    ("global_step 1e30", "global_step 1e+30 differs from step 2"),
])
def test_9_a_trainer_state_that_parses_but_is_wrong_is_damage(world, tmp_path, capsys, damage, message):
    out = copy_of(world, tmp_path)
    checkpoint = os.path.join(out, "checkpoint-2")
    state = json.load(open(os.path.join(checkpoint, TRAINER_STATE_FILE)))
    if damage == "deep":
        text = "[" * 5000 + "]" * 5000
    elif damage == "step four":
        text = json.dumps({**state, "step": "four"})
    else:
        text = json.dumps({**state, "train_state": {**state["train_state"], "global_step": 1e30}})
    rehash(checkpoint, TRAINER_STATE_FILE, text)
    line = refused(capsys, settings(world["data"], output_dir=out, resume_from_checkpoint=checkpoint))
    assert line.startswith(f"error: {checkpoint}/trainer_state.json: ") and message in line
    results = train.run(settings(world["data"], output_dir=out, resume_from_checkpoint="auto", max_steps=2))
    assert f"skipping checkpoint-2: {checkpoint}/trainer_state.json: " in capsys.readouterr().out
    assert results["global_step"] == 2 and results["train_steps"] == 1  # from checkpoint-1


# ---------------------------------------------------------------------------- 10-11: model directories
def model_copy(world, tmp_path):
    """The trained run's final model as a model directory of its own."""
    path = tmp_path / "model"
    path.mkdir()
    for name in os.listdir(world["trained"]):
        if name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                    "generation_config.json"):
            shutil.copy(os.path.join(world["trained"], name), path)
    return str(path)


def test_10_a_config_far_beyond_its_weights_is_refused_before_anything_is_built(world, tmp_path, capsys):
    model = model_copy(world, tmp_path)
    config = json.load(open(os.path.join(model, "config.json")))
    with open(os.path.join(model, "config.json"), "w") as f:
        json.dump({**config, "vocab_size": 10**12}, f)
    out = str(tmp_path / "out")
    refused(capsys, settings(world["data"], pretrained_model=model, output_dir=out),
            f"{model}: config.json's vocab_size=1000000000000 (x 16) is far beyond the weights it ships")
    assert not os.path.exists(out)


def test_10_a_huge_weights_file_is_judged_by_its_header_alone(world, tmp_path, capsys):
    model = model_copy(world, tmp_path)
    header = json.dumps({"bart.shared.weight": {"dtype": "F32", "shape": [50 * 2**28], "data_offsets": [0, 50 * 2**30]}}).encode()
    with open(os.path.join(model, "model.safetensors"), "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + 50 * 2**30)  # 50 GB, sparse: reading it whole would exhaust memory
    out = str(tmp_path / "out")
    started = time.time()
    line = refused(capsys, settings(world["data"], pretrained_model=model, output_dir=out), f"error: {model}")
    assert "refusing to build the model" in line or "weights do not match" in line
    assert time.time() - started < 120 and not os.path.exists(out)


def test_11_a_vocab_larger_than_the_embedding_is_refused_before_output_dir_opens(world, tmp_path, capsys):
    model = model_copy(world, tmp_path)
    rows = len(open(os.path.join(model, "vocab.txt"), encoding="utf-8").read().splitlines())
    with open(os.path.join(model, "vocab.txt"), "a", encoding="utf-8") as f:
        f.writelines(f"extra{i}\n" for i in range(10))
    out = str(tmp_path / "out")
    refused(capsys, settings(world["data"], pretrained_model=model, output_dir=out),
            f"its tokenizer has {rows + 10} entries, more than the model's {rows} embeddings")
    assert not os.path.exists(out)


# ---------------------------------------------------------------------------- 12-13: one line, no leak
def test_12_a_tokenizer_paddlenlp_cannot_load_is_one_line(world, tmp_path, capsys):
    model = model_copy(world, tmp_path)
    with open(os.path.join(model, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast"}, f)
    refused(capsys, settings(world["data"], pretrained_model=model, output_dir=str(tmp_path / "out")),
            f"pretrained_model {model}: paddlenlp cannot load its tokenizer (its tokenizer_config.json names "
            "PreTrainedTokenizerFast)")


@pytest.mark.parametrize("damage", ["truncated train_config.json", "trainer_state.json a list"])
def test_12_prediction_tools_on_damaged_json_say_one_line(world, tmp_path, capsys, damage):
    out = copy_of(world, tmp_path)
    if damage.startswith("truncated"):
        text = open(os.path.join(out, "train_config.json")).read()
        with open(os.path.join(out, "train_config.json"), "w") as f:
            f.write(text[: len(text) // 2])
        expected = f"error: {out}/train_config.json: bad JSON at line"
    else:
        os.remove(os.path.join(out, "config.json"))  # no final model at the root: the trainer state picks the model
        with open(os.path.join(out, TRAINER_STATE_FILE), "w") as f:
            f.write("[1, 2]")
        expected = f"error: {out}/trainer_state.json: not a trainer state (a JSON list, not an object)"
    assert predict_summarization.main([out, world["data"]["dev"]]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error", "Traceback"))]
    assert len(err) == 1 and err[0].startswith(expected), err


def test_12_a_seed_beyond_32_bits_is_a_config_error(tmp_path, capsys):
    code, lines = cli(capsys, {"seed": 4294967296, "output_dir": str(tmp_path / "out")})
    assert code == 2 and lines == ["error: seed must be <= 4294967295, got 4294967296"]


def test_12_ctrl_c_during_data_loading_is_one_line(tmp_path):
    big = write_jsonl(tmp_path / "big.jsonl", [{"content": f"第{i}条很长的新闻正文" * 30, "title": f"标题{i}"}
                                               for i in range(40000)])
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), f"--train_file={big}", f"--output_dir={out}",
                             "--device=cpu", "--report_to=none", "--max_steps=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    for line in proc.stdout:  # the config is described just before the data is read
        if line.startswith(" 'report_to'") or "'wandb_run_name'" in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert [line for line in stderr.splitlines() if line.strip()] == [
        "error: interrupted (Ctrl-C) before training started; nothing was saved"]
    assert not out.exists()


def test_13_a_crash_during_the_final_export_leaves_no_temp_dir(world, tmp_path, monkeypatch):
    from paddle_finetune.checkpoints import storage

    out = copy_of(world, tmp_path)
    real_save = storage.save_model_files

    def crash_in_export(model, tokenizer, directory, extra_files=None):
        real_save(model, tokenizer, directory, extra_files)
        if os.path.basename(directory).startswith(".tmp-final-"):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "save_model_files", crash_in_export)
    with pytest.raises(OSError, match="No space left"):
        train.run(settings(world["data"], output_dir=out, resume_from_checkpoint="auto", max_steps=3))
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-final-")]
    monkeypatch.undo()
    # a kill's leftover (no finally runs) goes at the next start
    os.makedirs(os.path.join(out, ".tmp-final-4242"))
    open(os.path.join(out, ".tmp-final-4242", "model.safetensors"), "w").close()
    train.run(settings(world["data"], output_dir=out, resume_from_checkpoint="auto", max_steps=3))
    assert not os.path.exists(os.path.join(out, ".tmp-final-4242"))
    record = json.load(open(os.path.join(out, MANIFEST_FILE)))
    assert set(os.listdir(out)) - {MANIFEST_FILE} <= set(record["entries"]), "every file of the run is recorded"
