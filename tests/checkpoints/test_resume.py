"""Issue #13: resumes that cannot be exact are refused (config keys, ranks, training data, max_steps);
the best checkpoint is recorded by name and resolved in the current output_dir (rotation, resume,
prediction); old checkpoints' weights still load for prediction."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from checkpoint_helpers import crafted_pickle, make_checkpoint, plant_pickles, save_tiny_checkpoint, tiny_bart
from helpers import ROOT, read_jsonl, run_entry, tiny_bart_arg
from paddle_finetune.checkpoints.files import COMPLETE_MARKER, best_checkpoint_name
from paddle_finetune.checkpoints.listing import list_checkpoints, resolve_best_checkpoint, resolve_model_dir, rotate_checkpoints
from paddle_finetune.checkpoints.resume import (check_max_steps, check_resume_compatible, data_fingerprint, evaluation_changes,
                                               resume_mismatches)
from paddle_finetune.checkpoints.storage import normalize_train_state, read_checkpoint, write_run_state
from paddle_finetune.errors import CheckpointError
from paddle_finetune.models.weights import load_model_dir

CONFIG = {"seed": 42, "train_batch_size": 8, "learning_rate": 1e-3, "max_steps": 10, "logging_steps": 10,
          "output_dir": "out", "model_config": {"d_model": 32}, "report_to": "wandb"}


# ---------------------------------------------------------------------------- which changes are safe
def test_resume_mismatches_splits_safe_and_unsafe_keys():
    new = {**CONFIG, "seed": 1, "train_batch_size": 16, "max_steps": 20, "report_to": "none", "output_dir": "moved",
           "model_config": {"d_model": 64}, "fast_kernels": False}
    unsafe, safe, data = resume_mismatches(CONFIG, new)
    assert unsafe == [("fast_kernels", "(unset)", False), ("model_config", {"d_model": 32}, {"d_model": 64}),
                      ("seed", 42, 1), ("train_batch_size", 8, 16)]
    assert safe == [("max_steps", 10, 20), ("output_dir", "out", "moved"), ("report_to", "wandb", "none")]
    assert data == []
    # the config as train_config.json holds it (JSON: tuples become lists) compares equal
    assert resume_mismatches({"x": [1, 2]}, {"x": (1, 2)}) == ([], [], [])


@pytest.fixture()
def contents(tmp_path):
    path = save_tiny_checkpoint(str(tmp_path), 4, config=CONFIG, data_fingerprint=data_fingerprint([{"a": [1]}]))
    return read_checkpoint(path)


def test_unsafe_changes_are_refused_in_one_line_naming_each_key_and_the_override(contents):
    fingerprint = contents.trainer_state["data_fingerprint"]
    with pytest.raises(CheckpointError) as e:
        check_resume_compatible(contents, {**CONFIG, "train_batch_size": 16, "seed": 1}, 1, fingerprint)
    message = str(e.value)
    assert "\n" not in message
    assert "seed 42 -> 1, train_batch_size 8 -> 16;" in message and "--resume_ignore_mismatch=True" in message
    lines = check_resume_compatible(contents, {**CONFIG, "seed": 1}, 1, fingerprint, ignore_mismatch=True)
    assert len(lines) == 1 and lines[0].startswith("WARNING: resume_ignore_mismatch=True") and "seed 42 -> 1" in lines[0]


def test_safe_changes_are_allowed_and_logged(contents):
    lines = check_resume_compatible(contents, {**CONFIG, "max_steps": 30, "logging_steps": 1}, 1,
                                                contents.trainer_state["data_fingerprint"])
    assert lines == ["resuming from checkpoint-4 with changed settings (allowed): logging_steps 10 -> 1, max_steps 10 -> 30"]
    # a path works as well as read contents
    assert check_resume_compatible(contents.path, CONFIG, 1, contents.trainer_state["data_fingerprint"]) == []


def test_another_rouge_style_is_refused_unless_ignored(contents):
    """Dev scores in another ROUGE convention are not comparable with the best so far (they differ by points)."""
    saved = {**CONFIG, "rouge_style": "chars"}
    path = save_tiny_checkpoint(os.path.dirname(contents.path), 6, config=saved,
                                data_fingerprint=contents.trainer_state["data_fingerprint"])
    fingerprint = contents.trainer_state["data_fingerprint"]
    with pytest.raises(CheckpointError, match='rouge_style "chars" -> "words"'):
        check_resume_compatible(path, {**saved, "rouge_style": "words"}, 1, fingerprint)
    lines = check_resume_compatible(path, {**saved, "rouge_style": "words"}, 1, fingerprint, ignore_mismatch=True)
    assert lines[0].startswith("WARNING: resume_ignore_mismatch=True") and 'rouge_style "chars" -> "words"' in lines[0]


def test_other_ranks_or_other_training_data_are_refused(contents):
    fingerprint = contents.trainer_state["data_fingerprint"]
    with pytest.raises(CheckpointError, match="ranks 1 -> 2"):
        check_resume_compatible(contents, CONFIG, 2, fingerprint)
    other = data_fingerprint([{"a": [2]}])
    with pytest.raises(CheckpointError, match="training data .*sha256:.* -> .*sha256:"):
        check_resume_compatible(contents, CONFIG, 1, other)


def test_data_fingerprint_covers_content_and_order():
    a, b = {"input_ids": [2, 5, 3], "labels": [7, 3]}, {"input_ids": [2, 6, 3], "labels": [8, 3]}
    fp = data_fingerprint
    assert fp([a, b]) == fp([dict(reversed(list(a.items()))), b])  # key order inside a feature is not data
    assert fp([a, b]) != fp([b, a])
    assert fp([a, b]) != fp([a, {**b, "labels": [8, 4]}])
    assert fp([a]) == fp([{"input_ids": np.array([2, 5, 3]), "labels": [np.int64(7), 3]}])
    assert fp([]) != fp([a])


def test_max_steps_below_the_checkpoint_is_an_error():
    check_max_steps(8, 8)
    with pytest.raises(CheckpointError, match="max_steps is 5, below step 8 of checkpoint-8: raise --max_steps"):
        check_max_steps(8, 5, "checkpoint-8")


# ---------------------------------------------------------------------------- the best checkpoint by name
def test_best_checkpoint_is_a_name_resolved_in_the_current_output_dir(tmp_path):
    state = normalize_train_state({"global_step": 40, "best_checkpoint": "/old/place/out/checkpoint-30",
                                               "best_metric": 12.5, "metric_for_best": "rougeL"})
    assert state["best_checkpoint"] == "checkpoint-30" and state["best_step"] == 30
    out = str(tmp_path)
    make_checkpoint(out, 30)
    write_run_state(out, state)
    saved = json.loads(open(os.path.join(out, "trainer_state.json")).read())
    assert (saved["best_checkpoint"], saved["best_step"], saved["best_metric"], saved["metric_for_best"]) == ("checkpoint-30", 30, 12.5, "rougeL")
    assert resolve_best_checkpoint(out, "/old/place/out/checkpoint-30") == os.path.join(out, "checkpoint-30")
    assert resolve_best_checkpoint(out, "checkpoint-20") is None


def test_rotation_keeps_the_best_by_name_even_off_the_save_steps(tmp_path):
    out = str(tmp_path)
    paths = {s: make_checkpoint(out, s) for s in (10, 20, 25, 30, 40)}  # 25: saved because it was the best
    removed = rotate_checkpoints(out, 2, keep=["checkpoint-25"])
    assert list_checkpoints(out) == [paths[25], paths[40]]
    assert sorted(removed) == sorted([paths[10], paths[20], paths[30]])
    make_checkpoint(out, 50)
    # an old absolute path from another place still protects the checkpoint of that name here
    rotate_checkpoints(out, 2, keep=["/elsewhere/out/checkpoint-25"])
    assert list_checkpoints(out) == [paths[25], os.path.join(out, "checkpoint-50")]


def test_resolve_model_dir_picks_final_model_then_best_then_newest(tmp_path, capsys):
    from paddle_finetune.errors import DataError

    out = tmp_path / "out"
    best, newest = save_tiny_checkpoint(str(out), 2), save_tiny_checkpoint(str(out), 4)
    assert resolve_model_dir(str(out)) == newest
    assert "newest checkpoint of" in capsys.readouterr().err
    write_run_state(str(out), {"best_checkpoint": "/gone/out/checkpoint-2", "best_metric": 9.0, "metric_for_best": "rougeL"})
    assert resolve_model_dir(str(out)) == best
    assert f"using the best checkpoint of {out}: checkpoint-2 (rougeL=9.0)" in capsys.readouterr().err
    assert resolve_model_dir(newest) == newest  # a model dir as given
    tiny_bart().save_pretrained(str(out), safe_serialization=True)  # the engine's final export
    (out / "train_config.json").write_text("{}")
    assert resolve_model_dir(str(out)) == str(out)
    assert "final model" in capsys.readouterr().err
    with pytest.raises(DataError, match="no model found"):
        resolve_model_dir(str(tmp_path / "empty"))


def test_old_checkpoint_weights_still_load_for_prediction(tmp_path):
    """An old-format checkpoint: resume is refused, but its model_state.pdparams loads through the
    restricted unpickler, exactly, and a crafted one never runs."""
    import paddle
    from paddlenlp.transformers import AutoModelForConditionalGeneration

    model = tiny_bart()
    old = tmp_path / "checkpoint-6"
    model.save_pretrained(str(old))  # paddlenlp's default: pickled model_state.pdparams
    paddle.save({"opt": 1}, str(old / "optimizer.pdopt"))
    (old / "trainer_state.pdparams").write_bytes(b"x")
    (old / COMPLETE_MARKER).write_text("step 6\n")
    loaded = load_model_dir(AutoModelForConditionalGeneration, resolve_model_dir(str(old)))
    assert all(np.array_equal(v.numpy(), loaded.state_dict()[k].numpy()) for k, v in model.state_dict().items())
    (old / "model_state.pdparams").write_bytes(crafted_pickle(str(tmp_path / "PWNED")))
    with pytest.raises(CheckpointError, match="refusing builtins.exec"):
        load_model_dir(AutoModelForConditionalGeneration, str(old))
    assert not (tmp_path / "PWNED").exists()


# ---------------------------------------------------------------------------- end to end
TINY = tiny_bart_arg(dropout=0.1)
RUN = [TINY, "--device=cpu", "--report_to=none", "--logging_steps=1", "--save_steps=2", "--save_total_limit=2",
       "--max_train_samples=32", "--train_batch_size=8", "--max_eval_samples=2", "--eval_batch_size=2",
       "--max_source_length=48", "--max_target_length=8"]


def test_e2e_crafted_pickles_in_a_checkpoint_never_run_on_resume(tmp_path):
    """train.py --resume_from_checkpoint with pickles planted as every old-format checkpoint file:
    next to a real checkpoint it resumes; as an old-format checkpoint it is refused in one line."""
    out = tmp_path / "out"
    first = run_entry(["train.py", f"--output_dir={out}", *RUN, "--max_steps=2"])
    assert first.returncode == 0, first.stderr[-2000:]
    marker = tmp_path / "PWNED"
    plant_pickles(str(out / "checkpoint-2"), str(marker))
    resumed = run_entry(["train.py", f"--output_dir={out}", *RUN, "--max_steps=4", "--resume_from_checkpoint=auto"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout and not marker.exists()
    old = out / "checkpoint-4"
    for name in os.listdir(old):
        os.remove(old / name)
    plant_pickles(str(old), str(marker))
    (old / COMPLETE_MARKER).write_text("step 4\n")
    refused = run_entry(["train.py", f"--output_dir={out}", *RUN, "--max_steps=6", f"--resume_from_checkpoint={old}"])
    assert refused.returncode == 2 and not marker.exists()
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: {old} is in the old pickled format")


def test_e2e_a_moved_output_dir_predicts_with_its_best_checkpoint(tmp_path):
    out = tmp_path / "out"
    result = run_entry(["train.py", f"--output_dir={out}", *RUN, "--max_steps=4"])
    assert result.returncode == 0, result.stderr[-2000:]
    moved = tmp_path / "moved"
    shutil.move(str(out), str(moved))  # trainer_state.json still names checkpoints under the old path
    best = best_checkpoint_name(json.loads((moved / "trainer_state.json").read_text())["best_checkpoint"])
    texts = tmp_path / "t.txt"
    texts.write_text("杭州图书馆启动科普讲座系列。\n", encoding="utf-8")
    predicted = run_entry(["tools/predict_summarization.py", str(moved), str(texts), f"--output={tmp_path / 'p.jsonl'}"])
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert f"using the final model in {moved}" in predicted.stderr  # exported at the end: the best (load_best_model_at_end)
    # a run killed before its end has no final model at the root: the best checkpoint, found by name in the moved dir
    for name in ("config.json", "model.safetensors"):
        os.remove(moved / name)
    predicted = run_entry(["tools/predict_summarization.py", str(moved), str(texts), f"--output={tmp_path / 'p.jsonl'}"])
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert f"using the best checkpoint of {moved}: {best}" in predicted.stderr
    assert len(read_jsonl(tmp_path / "p.jsonl")) == 1


def test_e2e_predict_cli_never_unpickles_a_crafted_model_dir(tmp_path):
    model_dir = tmp_path / "model"
    tiny_bart().save_pretrained(str(model_dir), safe_serialization=True)
    os.remove(model_dir / "model.safetensors")
    from paddlenlp.transformers import BertTokenizer

    from paddle_finetune.data.text import write_char_vocab

    BertTokenizer(vocab_file=write_char_vocab(["北京"], str(tmp_path / "vocab.txt"))).save_pretrained(str(model_dir))
    marker = tmp_path / "PWNED"
    (model_dir / "model_state.pdparams").write_bytes(crafted_pickle(str(marker), lambda p: {"w": p}))
    texts = tmp_path / "t.txt"
    texts.write_text("北京\n", encoding="utf-8")
    subprocess.run([sys.executable, "tools/predict_summarization.py", str(model_dir), str(texts)], cwd=ROOT,
                   capture_output=True, text=True, timeout=120)
    assert not marker.exists()


# ---------------------------------------------------------------------------- issue #22: what a resume compares
TRAIN_A, TRAIN_B = data_fingerprint([{"a": [1]}]), data_fingerprint([{"a": [2]}])
DEV_A, DEV_B = data_fingerprint([{"d": [1]}]), data_fingerprint([{"d": [2]}])
EVAL_CONFIG = {**CONFIG, "num_beams": 1, "text_column": None, "train_file": "a.jsonl", "max_eval_samples": 8}


@pytest.fixture(scope="module")
def evaluated_checkpoints(tmp_path_factory):
    """{"compared": a checkpoint whose run has a best on DEV_A, "fresh": one with no evaluation yet}."""
    from checkpoint_helpers import tiny_run
    from paddle_finetune.checkpoints.storage import save_checkpoint

    model, optimizer, scheduler = tiny_run(steps=1)
    found = {}
    for name, extra in {"compared": {"best_metric": 3.0, "best_step": 4, "best_checkpoint": "checkpoint-4"}, "fresh": {}}.items():
        out = tmp_path_factory.mktemp(name)
        state = {"global_step": 4, "epoch": 0, "position": 4, "dev_fingerprint": DEV_A, **extra}
        found[name] = read_checkpoint(save_checkpoint(str(out), 4, model, None, optimizer, scheduler, None, state, EVAL_CONFIG,
                                                      data_fingerprint=TRAIN_A))
    return found


@pytest.mark.parametrize("compared", [True, False])
@pytest.mark.parametrize("beams", [True, False])
@pytest.mark.parametrize("dev", [True, False])
@pytest.mark.parametrize("respelled", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_a_resume_compares_the_data_and_the_evaluation_not_the_spelling(evaluated_checkpoints, compared, beams, dev,
                                                                      respelled, train):
    """Every combination: refused exactly when the training data changed, or the run has evaluations to compare with
    and an evaluation setting or the dev data changed; each cause named; keys that only spell the data allowed."""
    contents = evaluated_checkpoints["compared" if compared else "fresh"]
    config = {**EVAL_CONFIG, "num_beams": 2 if beams else 1,
              **({"text_column": "content", "train_file": "a.csv"} if respelled else {})}
    args = (contents, config, 1, TRAIN_B if train else TRAIN_A)
    dev_fp = DEV_B if dev else DEV_A
    incomparable = compared and (beams or dev)
    if train or incomparable:
        with pytest.raises(CheckpointError) as e:
            check_resume_compatible(*args, dev_fingerprint=dev_fp)
        message = str(e.value)
        assert ("num_beams 1 -> 2" in message) == (beams and compared)
        assert ('dev data "sha256:' in message) == (dev and compared)
        assert ("training data" in message) == train
        # keys that only spell the data are named beside a data fingerprint that changed
        assert ('(with text_column null -> "content", train_file "a.jsonl" -> "a.csv")' in message) == (
            respelled and (train or (dev and compared)))
        assert ("the best is then re-based" in message) == incomparable
        lines = check_resume_compatible(*args, dev_fingerprint=dev_fp, ignore_mismatch=True)
        assert lines[-1].startswith("WARNING: resume_ignore_mismatch=True")
    else:
        lines = check_resume_compatible(*args, dev_fingerprint=dev_fp)
        assert any("same tokenized data read another way (allowed): text_column null" in line for line in lines) == respelled
        assert any("no evaluation to compare with" in line for line in lines) == (beams or dev)
    assert bool(evaluation_changes(contents, config, dev_fp)) == incomparable


def test_max_eval_samples_is_compared_through_the_dev_data_it_selects(evaluated_checkpoints):
    contents = evaluated_checkpoints["compared"]
    same_rows = {**EVAL_CONFIG, "max_eval_samples": 0}  # 8 -> all, and the dev set has 8 rows: the same dev data
    lines = check_resume_compatible(contents, same_rows, 1, TRAIN_A, dev_fingerprint=DEV_A)
    assert lines == ["resuming from checkpoint-4 with the same tokenized data read another way (allowed): max_eval_samples 8 -> 0"]
    with pytest.raises(CheckpointError, match=r'dev data "sha256:\w+ \(1 features\)" -> "sha256:\w+ \(1 features\)" '
                                              r"\(with max_eval_samples 8 -> 1\)"):
        check_resume_compatible(contents, {**EVAL_CONFIG, "max_eval_samples": 1}, 1, TRAIN_A, dev_fingerprint=DEV_B)


def test_an_older_checkpoint_with_a_best_but_no_dev_record(tmp_path):
    """A checkpoint from before dev fingerprints resumes when no key that chooses data changed (logged), and is
    refused as other dev data when one did."""
    from checkpoint_helpers import tiny_run
    from paddle_finetune.checkpoints.storage import save_checkpoint

    model, optimizer, scheduler = tiny_run(steps=1)
    state = {"global_step": 4, "epoch": 0, "position": 4, "best_metric": 3.0, "best_step": 4}  # no dev_fingerprint
    contents = read_checkpoint(save_checkpoint(str(tmp_path), 4, model, None, optimizer, scheduler, None, state, EVAL_CONFIG,
                                               data_fingerprint=TRAIN_A))
    assert check_resume_compatible(contents, EVAL_CONFIG, 1, TRAIN_A, dev_fingerprint=DEV_A) == [
        "checkpoint-4 predates dev data fingerprints: its dev data is taken as this run's, since no key that chooses "
        "data changed (the rows at the same path are not checked)"]
    assert evaluation_changes(contents, EVAL_CONFIG, DEV_A) == []
    fewer = {**EVAL_CONFIG, "max_eval_samples": 2}
    with pytest.raises(CheckpointError, match=r'dev data \(not recorded\) -> "sha256:\w+ \(1 features\)" '
                                              r"\(with max_eval_samples 8 -> 2\)"):
        check_resume_compatible(contents, fewer, 1, TRAIN_A, dev_fingerprint=DEV_A)
    assert evaluation_changes(contents, fewer, DEV_A) == [("dev data", "(not recorded)", DEV_A)]


def test_evaluation_keys_are_never_safe():
    from paddle_finetune.checkpoints.resume import DATA_KEYS, SAFE_RESUME_KEYS
    from paddle_finetune.evaluation.selection import EVALUATION_KEYS

    assert not (EVALUATION_KEYS & SAFE_RESUME_KEYS) and not (EVALUATION_KEYS & DATA_KEYS)
    unsafe, safe, data = resume_mismatches({"num_beams": 1, "dev_file": "a"}, {"num_beams": 4, "dev_file": "b"})
    assert unsafe == [("num_beams", 1, 4)] and safe == [] and data == [("dev_file", "a", "b")]
