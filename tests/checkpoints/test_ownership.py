"""Issue #21: a run owns only what it wrote. The ownership record, the refusals (protected places, inputs, foreign
files), overwrite removing exactly an earlier run's recorded files, and a property test over generated directory
trees and flag combinations: every run, refused or finished, leaves every path it did not write byte-identical.

The property test drives the real claim/check/open path of a run (training.session.Run, open_output_dir and the
run's write hook); the trainers' own runs through it are in tests/training/test_ownership_cases.py."""
import json
import os

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from paddle_finetune.checkpoints import ownership
from paddle_finetune.checkpoints.files import COMPLETE_MARKER, LOCK_FILE
from paddle_finetune.checkpoints.output_dir import check_output_dir, open_output_dir
from paddle_finetune.checkpoints.ownership import MANIFEST_FILE, inventory, record_entries
from paddle_finetune.errors import ConfigError
from paddle_finetune.reporting.files import write_json_atomic
from paddle_finetune.runtime.state import note_write
from paddle_finetune.training.session import Run
from helpers import snapshot


def earlier_run(out, extra_user_file=False, checkpoint_steps=(2,)):
    """An output_dir as a run of this version leaves it: its files, and the record of them."""
    os.makedirs(out, exist_ok=True)
    files = {"train_config.json": b'{"seed": 1}', "train_log.jsonl": b'{"step": 1}\n', "run.log": b"old run\n",
             "all_results.json": b"{}", "model.safetensors": b"weights"}
    entries = {}
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        entries[name] = "file"
    for step in checkpoint_steps:
        path = os.path.join(out, f"checkpoint-{step}")
        os.makedirs(path)
        with open(os.path.join(path, COMPLETE_MARKER), "w") as f:
            json.dump({"format": 2, "step": step, "files": {}}, f)
        entries[f"checkpoint-{step}"] = "dir"
    record_entries(out, entries, tool="train.py", run="earlier")
    if extra_user_file:
        with open(os.path.join(out, "my_notes.txt"), "w") as f:
            f.write("mine")
    return set(entries)


def legacy_run(out):
    """An output_dir of the previous version: no record, its usual names."""
    os.makedirs(os.path.join(out, "checkpoint-3"))
    for name, data in {"train_config.json": "{}", "trainer_state.json": '{"global_step": 3}', "vocab.txt": "a\n",
                       "config.json": "{}", "train_log.jsonl": "", "checkpoint-3/" + COMPLETE_MARKER: "{}"}.items():
        with open(os.path.join(out, name), "w") as f:
            f.write(data)
    return {"train_config.json", "trainer_state.json", "vocab.txt", "config.json", "train_log.jsonl", "checkpoint-3"}


# ---------------------------------------------------------------------------- the record and the inventory
def test_a_recorded_folder_replaced_by_a_symlink_is_not_ours(tmp_path):
    out = str(tmp_path / "out")
    earlier_run(out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("x")
    import shutil

    shutil.rmtree(os.path.join(out, "checkpoint-2"))
    os.symlink(elsewhere, os.path.join(out, "checkpoint-2"))
    inv = inventory(out)
    assert inv.foreign == ["checkpoint-2"] and "checkpoint-2" not in inv.owned
    with pytest.raises(ConfigError, match=r"holds files no paddle-finetune run wrote \(checkpoint-2\)"):
        check_output_dir({"output_dir": out, "overwrite_output_dir": True})
    assert (elsewhere / "precious.txt").read_text() == "x"


def test_an_earlier_version_output_dir_is_adopted_only_by_its_known_names(tmp_path):
    out = str(tmp_path / "legacy")
    names = legacy_run(out)
    inv = inventory(out)
    assert inv.legacy and set(inv.owned) == names and inv.foreign == []
    (tmp_path / "legacy" / "my_notes.txt").write_text("mine")
    os.symlink("/etc", os.path.join(out, "wandb"))  # a known name, but a symlink: never ours
    inv = inventory(out)
    assert inv.foreign == ["my_notes.txt", "wandb"]
    # a folder of a model and a vocab, without the train_config.json of a run, is no earlier run
    user = tmp_path / "user"
    user.mkdir()
    (user / "config.json").write_text("{}")
    (user / "vocab.txt").write_text("a\n")
    assert inventory(str(user)).foreign == ["config.json", "vocab.txt"]


def test_leftovers_of_interrupted_writes_are_ours_only_in_a_directory_that_is_ours(tmp_path):
    out = str(tmp_path / "out")
    earlier_run(out)
    for name in (".tmp-final-123", ".tmp-checkpoint-4-99", "checkpoint-2.old-7", "all_results.json.tmp55"):
        os.makedirs(os.path.join(out, name)) if not name.endswith("55") else open(os.path.join(out, name), "w").close()
    inv = inventory(out)
    assert inv.foreign == [] and sorted(inv.transient) == sorted(
        [".tmp-final-123", ".tmp-checkpoint-4-99", "checkpoint-2.old-7", "all_results.json.tmp55"])
    stranger = tmp_path / "stranger"
    (stranger / ".tmp-final-1").mkdir(parents=True)
    assert inventory(str(stranger)).foreign == [".tmp-final-1"]


def test_an_unreadable_record_proves_nothing(tmp_path):
    out = tmp_path / "out"
    earlier_run(str(out))
    (out / MANIFEST_FILE).write_text("[" * 100000)
    with pytest.raises(ConfigError, match="nested deeper than 64 levels .*nothing was changed"):
        check_output_dir({"output_dir": str(out), "overwrite_output_dir": True})


def test_overwrite_removes_exactly_the_recorded_entries_and_logs_them(tmp_path, capsys):
    out = str(tmp_path / "out")
    earlier_run(out, checkpoint_steps=(2, 4))
    config = {"output_dir": out, "overwrite_output_dir": True}
    with Run(config):
        open_output_dir(config)
        write_json_atomic(os.path.join(out, "all_results.json"), {"new": 1})
    assert sorted(os.listdir(out)) == [MANIFEST_FILE, "all_results.json", "run.log", "train_config.json"]
    printed = capsys.readouterr().out
    assert "overwrite_output_dir=True: removed the earlier run's files in" in printed
    assert "all_results.json, checkpoint-2, checkpoint-4, model.safetensors, run.log and 2 more" in printed
    record = json.load(open(os.path.join(out, MANIFEST_FILE)))
    assert sorted(record["entries"]) == ["all_results.json", "run.log", "train_config.json"]
    assert record["runs"][-1]["removed_earlier_run"][:2] == ["all_results.json", "checkpoint-2"]


def test_the_run_records_every_entry_before_writing_it(tmp_path):
    out = str(tmp_path / "out")
    config = {"output_dir": out}
    with Run(config):
        open_output_dir(config)
        note_write(os.path.join(out, "checkpoint-5"), "dir")
        assert json.load(open(os.path.join(out, MANIFEST_FILE)))["entries"]["checkpoint-5"]["kind"] == "dir"
        note_write(os.path.join(out, "initial_model", "config.json"))  # a file inside a new folder: the folder is recorded
        note_write(str(tmp_path / "elsewhere.txt"))  # outside output_dir: not the run's to record there
    entries = json.load(open(os.path.join(out, MANIFEST_FILE)))["entries"]
    assert {k: v["kind"] for k, v in entries.items()} == {
        "checkpoint-5": "dir", "initial_model": "dir", "run.log": "file", "train_config.json": "file"}
    assert not os.path.exists(tmp_path / MANIFEST_FILE)


# ---------------------------------------------------------------------------- protected places and inputs
def test_protected_places(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home / "work")
    assert ownership.protected_reason("/") == "the filesystem root"
    assert ownership.protected_reason("~") == "your home directory"
    assert ownership.protected_reason(str(tmp_path)).startswith("a folder holding your home directory")
    assert ownership.protected_reason(".") == "the current directory"
    os.symlink(home / "work", tmp_path / "link")
    assert ownership.protected_reason(str(tmp_path / "link")) == "the current directory"  # real paths
    assert ownership.protected_reason(ownership.PROJECT_ROOT) == "paddle-finetune's own project folder"
    assert ownership.protected_reason("out") is None


def test_a_resumed_checkpoint_from_another_output_dir_is_an_input(tmp_path):
    a = str(tmp_path / "a")
    earlier_run(a)
    with pytest.raises(ConfigError, match=r"output_dir .*/a/checkpoint-2/sub is inside resume_from_checkpoint"):
        check_output_dir({"output_dir": os.path.join(a, "checkpoint-2", "sub"),
                          "resume_from_checkpoint": os.path.join(a, "checkpoint-2")})
    check_output_dir({"output_dir": a, "resume_from_checkpoint": os.path.join(a, "checkpoint-2")})  # its own: fine
    check_output_dir({"output_dir": str(tmp_path / "b"), "resume_from_checkpoint": os.path.join(a, "checkpoint-2")})


# ---------------------------------------------------------------------------- the property
NAMES = ["root", "data", "data/sub", "earlier", "earlier/checkpoint-2", "legacy", "user", "empty", "new/nested",
         "link_to_data", "link_to_earlier", "link_to_user", "cwd", "parent_of_cwd", "project"]


def build_world(root):
    """The generated tree: user files, inputs, an earlier run, an earlier version's run, symlinks, a cwd."""
    os.makedirs(os.path.join(root, "data"))
    for name, text in {"data/train.jsonl": '{"content": "a", "title": "b"}\n', "data/dev.jsonl": "{}\n",
                       "data/notes.txt": "user's", "user/notes.txt": "user's", "user/config.json": "{}",
                       "cwd_parent/cwd/script.py": "print()", "project/README.md": "project",
                       "pretrained/config.json": "{}", "pretrained/model.safetensors": "w"}.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    os.makedirs(os.path.join(root, "empty"))
    owned = {"earlier": earlier_run(os.path.join(root, "earlier")), "legacy": legacy_run(os.path.join(root, "legacy"))}
    for link, target in (("link_to_data", "data"), ("link_to_earlier", "earlier"), ("link_to_user", "user")):
        os.symlink(os.path.join(root, target), os.path.join(root, link))
    return owned


def output_path(root, choice):
    return {"root": root, "cwd": os.path.join(root, "cwd_parent", "cwd"), "parent_of_cwd": os.path.join(root, "cwd_parent"),
            "data/sub": os.path.join(root, "data", "sub")}.get(choice, os.path.join(root, choice))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(out=st.sampled_from(NAMES), overwrite=st.booleans(), do_train=st.booleans(),
       resume=st.sampled_from([None, "auto", "earlier/checkpoint-2", "legacy/checkpoint-3"]),
       pretrained=st.sampled_from([None, "pretrained", "output_dir", "earlier"]),
       user_file_in_earlier=st.booleans())
def test_every_run_leaves_what_it_did_not_write_byte_identical(tmp_path_factory, monkeypatch, out, overwrite, do_train,
                                                                resume, pretrained, user_file_in_earlier):
    root = str(tmp_path_factory.mktemp("world"))
    owned = build_world(root)
    if user_file_in_earlier:
        with open(os.path.join(root, "earlier", "my_notes.txt"), "w") as f:
            f.write("mine")
    monkeypatch.chdir(os.path.join(root, "cwd_parent", "cwd"))
    monkeypatch.setattr(ownership, "PROJECT_ROOT", os.path.join(root, "project"))
    output_dir = output_path(root, out)
    config = {"output_dir": output_dir, "overwrite_output_dir": overwrite, "do_train": do_train,
              "resume_from_checkpoint": os.path.join(root, resume) if resume not in (None, "auto") else resume,
              "pretrained_model": {None: "", "output_dir": output_dir}.get(pretrained, os.path.join(root, pretrained or "")),
              "train_file": os.path.join(root, "data", "train.jsonl"), "dev_file": os.path.join(root, "data", "dev.jsonl")}
    before = snapshot(root)
    refused = None
    try:
        with Run(config):
            open_output_dir(config)
            write_json_atomic(os.path.join(output_dir, "all_results.json"), {"done": True})
            note_write(os.path.join(output_dir, "checkpoint-9"), "dir")
            os.makedirs(os.path.join(output_dir, "checkpoint-9"), exist_ok=True)
    except ConfigError as e:
        refused = str(e)
        event("refused")
        assert "\n" not in refused and "nothing was changed" in refused
        assert "--overwrite_output_dir" not in refused or inventory(output_dir).foreign == []
    after = snapshot(root)
    if refused:
        assert after == before, refused
        return
    event("finished" + (" after removing an earlier run's files" if overwrite and out in ("earlier", "legacy", "link_to_earlier") else ""))
    # What changed lies inside output_dir, in entries the run wrote or an earlier run recorded there.
    real_out = os.path.realpath(output_dir)
    earlier_names = {os.path.realpath(os.path.join(root, d)): names for d, names in owned.items()}.get(real_out, set())
    for rel in set(before) | set(after):
        if before.get(rel, "absent") == after.get(rel, "absent"):
            continue
        path = os.path.realpath(os.path.join(root, rel.rstrip("/")))
        if rel not in before and rel.endswith("/") and (real_out + os.sep).startswith(path + os.sep):
            continue  # output_dir itself, or a missing parent of it, created
        assert path.startswith(real_out + os.sep), f"{rel} changed outside output_dir {output_dir}"
        top = os.path.relpath(path, real_out).split(os.sep)[0]
        written = {"all_results.json", "checkpoint-9", "train_config.json", "run.log", MANIFEST_FILE, LOCK_FILE}
        assert top in written or (top in earlier_names and (overwrite or resume)), f"{rel} is not the run's"
    for name in ("data/train.jsonl", "data/dev.jsonl", "data/notes.txt", "user/notes.txt", "project/README.md",
                 "pretrained/model.safetensors"):
        assert after[name] == before[name]


def test_a_prediction_may_replace_its_own_earlier_output_beside_a_final_model_but_never_the_model(tmp_path):
    from paddle_finetune.commands.output import check_output
    from paddle_finetune.checkpoints.ownership import record_output_file

    out = tmp_path / "out"
    out.mkdir()
    for name in ("config.json", "model.safetensors", "vocab.txt", "train_config.json"):
        (out / name).write_text("{}")
    data = tmp_path / "test.jsonl"
    data.write_text("{}\n")
    preds = out / "preds.jsonl"
    preds.write_text("earlier predictions\n")
    record_output_file(str(preds), tool="predict_summarization")
    check_output(str(preds), "predict_summarization", str(data), str(out))  # its own, unchanged: may be replaced
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        with pytest.raises(ConfigError, match=f"is a file of the model {out}/{name}"):
            check_output(str(out / name), "predict_summarization", str(data), str(out), overwrite=True)
    (out / "checkpoint-3").mkdir()
    (out / "checkpoint-3" / COMPLETE_MARKER).write_text("{}")
    (out / "checkpoint-3" / "config.json").write_text("{}")
    (out / "checkpoint-3" / "model.safetensors").write_text("w")
    with pytest.raises(ConfigError, match="is inside the checkpoint"):
        check_output(str(out / "checkpoint-3" / "new.jsonl"), "predict_summarization", str(data), str(out / "checkpoint-3"))
