"""Issue #13: the checkpoint format (safetensors + JSON, never a pickle on load), its integrity checks,
exact weight matching, the restricted unpickler for old .pdparams, and the RNG state as JSON."""
import json
import os
import pickle
import random
import shutil

import numpy as np
import pytest
from checkpoint_helpers import OPTIMIZER_CONFIG, crafted_pickle, save_tiny_checkpoint, tiny_bart, tiny_run, train_steps, plant_pickles
from paddle_finetune.checkpoints.files import COMPLETE_MARKER, FORMAT, RANK_RNG_FILE, file_digest
from paddle_finetune.checkpoints.listing import resolve_model_dir
from paddle_finetune.checkpoints.optimizer_state import apply_optimizer_state, create_accumulators, optimizer_state
from paddle_finetune.checkpoints.resume import resolve_resume
from paddle_finetune.checkpoints.storage import load_checkpoint, load_rank_rng, read_checkpoint, save_checkpoint
from paddle_finetune.errors import CheckpointError
from paddle_finetune.models.weights import load_model_dir, read_pickled_state_dict
from paddle_finetune.runtime.rng import dropout_rng, get_rng_state, paddle_cpu_rng_checkpoints, rng_state_from_json, rng_state_to_json, set_rng_state, set_seed
from paddle_finetune.training.optimization import build_optimizer


# ---------------------------------------------------------------------------- format
def test_checkpoint_holds_no_pickle_and_a_manifest_of_every_file(tmp_path):
    path = save_tiny_checkpoint(str(tmp_path), 2)
    names = set(os.listdir(path))
    assert {"model.safetensors", "config.json", "optimizer.safetensors", "optimizer.json", "trainer_state.json",
            "train_config.json", COMPLETE_MARKER} <= names
    assert not [n for n in names if n.endswith((".pdparams", ".pdopt", ".pdstate", ".pkl"))]
    manifest = json.loads(open(os.path.join(path, COMPLETE_MARKER)).read())
    assert manifest["format"] == FORMAT and manifest["step"] == 2
    assert set(manifest["files"]) == names - {COMPLETE_MARKER}
    state = json.loads(open(os.path.join(path, "trainer_state.json")).read())
    assert {"train_state", "lr_scheduler", "scaler", "rng", "world_size", "data_fingerprint"} <= set(state)
    assert set(state["rng"]) >= {"python", "numpy", "paddle", "dropout"}
    from safetensors.numpy import load_file

    keys = load_file(os.path.join(path, "optimizer.safetensors"))
    # structured parameter names, not paddle's process-dependent param.name
    assert "bart.shared.weight/moment1" in keys and "lm_head_weight/beta2_pow_acc" in keys


def test_save_load_round_trip_continues_exactly(tmp_path):
    """A fresh model and optimizer loaded from a checkpoint take the same next steps as the originals."""
    model, optimizer, scheduler = tiny_run(steps=3)
    path = save_checkpoint(str(tmp_path), 3, model, None, optimizer, scheduler, None, {"global_step": 3}, {})
    fresh = tiny_bart(seed=123)
    fresh_opt, fresh_sched = build_optimizer(fresh, OPTIMIZER_CONFIG, 20)
    saved = load_checkpoint(path, fresh, fresh_opt, fresh_sched, None)
    assert saved["train_state"]["global_step"] == 3 and saved["world_size"] == 1
    assert fresh_sched.get_lr() == scheduler.get_lr()
    import paddle

    paddle.seed(9)
    want = train_steps(model, optimizer, scheduler, 3, seed=5)
    paddle.seed(9)
    got = train_steps(fresh, fresh_opt, fresh_sched, 3, seed=5)
    assert got == want
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert np.array_equal(a.numpy(), b.numpy())


def test_rng_state_round_trips_through_json():
    import paddle

    paddle.set_device("cpu")
    set_seed(3, rank=1)
    random.random(), np.random.randn(), paddle.rand([2]), dropout_rng.random(3)
    data = json.loads(json.dumps(rng_state_to_json(get_rng_state())))

    def draws():
        return random.random(), np.random.rand(), np.random.randn(), paddle.rand([3]).numpy().tolist(), dropout_rng.random(2).tolist()

    want = draws()
    set_rng_state(rng_state_from_json(data))
    got = draws()
    if not paddle_cpu_rng_checkpoints():  # paddle 2.6 keeps no engine state (the loop reseeds it per step instead)
        got, want = got[:3] + got[4:], want[:3] + want[4:]
    assert got == want
    with pytest.raises(ValueError, match="numpy's key"):
        rng_state_from_json({**data, "numpy": {**data["numpy"], "key": [1, 2, 3]}})


def test_rank_rng_is_json_and_filed_into_the_checkpoint(tmp_path):
    out = str(tmp_path)
    model, optimizer, scheduler = tiny_run()
    rank0 = rng_state_to_json(get_rng_state())
    np.random.rand()  # rank 1's state: another one
    rank1 = rng_state_to_json(get_rng_state())
    # every rank's state, as all_gather hands them to each writer
    path = save_checkpoint(out, 2, model, None, optimizer, scheduler, None, {"global_step": 2}, {}, rng_states=[rank0, rank1])
    name = RANK_RNG_FILE.format(rank=1)
    assert name.endswith(".json") and json.loads(open(os.path.join(path, name)).read()) == {"format": FORMAT, "rank": 1, "rng": rank1}
    contents = read_checkpoint(path)
    assert set(contents.rank_rng) == {1}
    assert contents.trainer_state["rng"] == rank0 and contents.trainer_state["world_size"] == 2
    assert load_rank_rng(contents, 1, None) is contents.rank_rng[1]
    assert load_rank_rng(contents, 0, "rank 0's") == "rank 0's"


# ---------------------------------------------------------------------------- integrity
@pytest.fixture()
def saved(tmp_path):
    return save_tiny_checkpoint(str(tmp_path / "out"), 4)


def rewrite(path, name, data, update_manifest=False):
    """Replace a checkpoint file; update_manifest=True as a buggy writer would (checksums match the bad file)."""
    with open(os.path.join(path, name), "wb") as f:
        f.write(data)
    if update_manifest:
        marker = os.path.join(path, COMPLETE_MARKER)
        manifest = json.loads(open(marker).read())
        manifest["files"][name] = file_digest(os.path.join(path, name))
        open(marker, "w").write(json.dumps(manifest))


def read_bytes(path, name):
    return open(os.path.join(path, name), "rb").read()


@pytest.mark.parametrize("case, pattern", [
    ("truncated model", r"model\.safetensors: \d+ bytes, \d+ recorded in CHECKPOINT_COMPLETE \(truncated\)"),
    ("flipped byte", r"optimizer\.safetensors: sha256 differs from CHECKPOINT_COMPLETE \(corrupted\)"),
    ("truncated safetensors, manifest agrees", r"model\.safetensors: truncated or not a safetensors file"),
    ("bad json", r"trainer_state\.json: bad JSON at line"),
    ("missing file", r"optimizer\.json: missing"),
    ("incomplete marker", r"CHECKPOINT_COMPLETE: (bad JSON|incomplete marker)"),
    ("damaged tokenizer-side file", r"config\.json: sha256 differs"),
])
def test_read_checkpoint_names_the_bad_file(saved, case, pattern):
    if case == "truncated model":
        rewrite(saved, "model.safetensors", read_bytes(saved, "model.safetensors")[:-100])
    elif case == "flipped byte":
        data = bytearray(read_bytes(saved, "optimizer.safetensors"))
        data[-5] ^= 1
        rewrite(saved, "optimizer.safetensors", bytes(data))
    elif case == "truncated safetensors, manifest agrees":
        rewrite(saved, "model.safetensors", read_bytes(saved, "model.safetensors")[:-100], update_manifest=True)
    elif case == "bad json":
        rewrite(saved, "trainer_state.json", read_bytes(saved, "trainer_state.json")[:-40], update_manifest=True)
    elif case == "missing file":
        os.remove(os.path.join(saved, "optimizer.json"))
    elif case == "incomplete marker":
        rewrite(saved, COMPLETE_MARKER, read_bytes(saved, COMPLETE_MARKER)[:50])
    elif case == "damaged tokenizer-side file":
        rewrite(saved, "config.json", read_bytes(saved, "config.json").replace(b"16", b"17", 1))
    with pytest.raises(CheckpointError, match=pattern) as e:
        read_checkpoint(saved)
    assert "\n" not in str(e.value) and saved in str(e.value)


def test_auto_falls_back_to_the_newest_checkpoint_that_reads(tmp_path, capsys):
    out = str(tmp_path)
    good = save_tiny_checkpoint(out, 2)
    bad = save_tiny_checkpoint(out, 4)
    rewrite(bad, "model.safetensors", read_bytes(bad, "model.safetensors")[:-10])
    contents = resolve_resume({"resume_from_checkpoint": "auto", "output_dir": out})
    assert contents.path == good and os.fspath(contents) == good and str(contents) == good
    logged = capsys.readouterr().out
    assert "skipping checkpoint-4" in logged and "model.safetensors" in logged and "using checkpoint-2" in logged
    with pytest.raises(CheckpointError, match=r"checkpoint-4/model\.safetensors: \d+ bytes"):
        resolve_resume({"resume_from_checkpoint": bad, "output_dir": out})
    rewrite(good, "trainer_state.json", b"{}")
    with pytest.raises(CheckpointError, match="no checkpoint in .* can be read: checkpoint-4: .*; checkpoint-2: "):
        resolve_resume({"resume_from_checkpoint": "auto", "output_dir": out})


def test_old_pickled_checkpoint_is_refused_on_resume_with_advice(tmp_path):
    path = tmp_path / "checkpoint-6"
    path.mkdir()
    for name in ("model_state.pdparams", "optimizer.pdopt", "trainer_state.pdparams"):
        (path / name).write_bytes(b"not read")
    (path / COMPLETE_MARKER).write_text("step 6\n")
    with pytest.raises(CheckpointError, match="old pickled format .* never unpickled on resume .* --pretrained_model="):
        read_checkpoint(str(path))


# ---------------------------------------------------------------------------- exact weights
def test_a_genuine_round_trip_is_never_refused(tmp_path):
    """BART (tied embeddings, lm_head_weight, the final_logits_bias buffer) and BERT (pooler, classifier)
    load exactly what save_pretrained wrote, through the Auto classes the prediction CLIs use."""
    from paddlenlp.transformers import (AutoModelForConditionalGeneration, AutoModelForMaskedLM,
                                        AutoModelForSequenceClassification, BertConfig, BertForMaskedLM,
                                        BertForSequenceClassification)

    bart = tiny_bart()
    bart.save_pretrained(str(tmp_path / "bart"), safe_serialization=True)
    loaded = load_model_dir(AutoModelForConditionalGeneration, str(tmp_path / "bart"))
    assert type(loaded).__name__ == "BartForConditionalGeneration"
    assert all(np.array_equal(v.numpy(), loaded.state_dict()[k].numpy()) for k, v in bart.state_dict().items())
    assert loaded.generation_config.decoder_start_token_id == 2

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=32, num_labels=3)
    for cls, auto in ((BertForSequenceClassification, AutoModelForSequenceClassification), (BertForMaskedLM, AutoModelForMaskedLM)):
        model = cls(config)
        directory = str(tmp_path / cls.__name__)
        model.save_pretrained(directory, safe_serialization=True)
        again = load_model_dir(auto, directory)
        assert type(again) is cls
        assert all(np.array_equal(v.numpy(), again.state_dict()[k].numpy()) for k, v in model.state_dict().items())


def test_foreign_missing_or_misshaped_weights_are_refused_naming_the_keys(tmp_path):
    from safetensors.numpy import load_file, save_file

    from paddlenlp.transformers import BartForConditionalGeneration

    directory = str(tmp_path / "m")
    tiny_bart().save_pretrained(directory, safe_serialization=True)
    weights = load_file(os.path.join(directory, "model.safetensors"))
    path = os.path.join(directory, "model.safetensors")

    foreign = {f"encoder.layer.{i}.weight": np.zeros(10000, np.float32) for i in range(3)}
    save_file(foreign, path)
    with pytest.raises(CheckpointError, match=r"do not match BartForConditionalGeneration: missing .* and \d+ more; unexpected encoder\.layer\.0\.weight"):
        load_model_dir(BartForConditionalGeneration, directory)
    # far fewer numbers than config.json's sizes need: refused before the model is built (issue #21)
    save_file({k: v[:3] for k, v in foreign.items()}, path)
    with pytest.raises(CheckpointError, match=r"config.json's vocab_size=60 \(x 16\) is far beyond the weights it ships"):
        load_model_dir(BartForConditionalGeneration, directory)

    save_file({k: v for k, v in weights.items() if k != "final_logits_bias"}, path)
    with pytest.raises(CheckpointError, match=r"missing final_logits_bias$"):
        load_model_dir(BartForConditionalGeneration, directory)

    save_file({**weights, "lm_head_weight": np.zeros((61, 16), np.float32)}, path)
    with pytest.raises(CheckpointError, match=r"wrong shape lm_head_weight \[61, 16\] \(model \[60, 16\]\)"):
        load_model_dir(BartForConditionalGeneration, directory)

    save_file({**weights, "bart.shared.weight": weights["bart.shared.weight"] + 1}, path)
    with pytest.raises(CheckpointError, match="tied weights .*bart.shared.weight.* differ"):
        load_model_dir(BartForConditionalGeneration, directory)


def test_pretrained_base_model_into_a_model_with_a_new_head(tmp_path, capsys):
    """allow_new_head=True (pretrained weights): a BertModel file fine-tunes a classifier; the new head is
    named; a mis-shaped or missing *base* weight is still refused."""
    from paddlenlp.transformers import BertConfig, BertForSequenceClassification, BertModel
    from safetensors.numpy import load_file, save_file

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=32)
    base = BertModel(config)
    directory = str(tmp_path / "base")
    base.save_pretrained(directory, safe_serialization=True)
    with pytest.raises(CheckpointError, match="missing"):
        load_model_dir(BertForSequenceClassification, directory, num_labels=4)
    model = load_model_dir(BertForSequenceClassification, directory, allow_new_head=True, num_labels=4)
    assert model.classifier.weight.shape == [16, 4]
    assert np.array_equal(model.bert.embeddings.word_embeddings.weight.numpy(), base.embeddings.word_embeddings.weight.numpy())
    assert "newly initialized (not in the file): classifier.bias, classifier.weight" in capsys.readouterr().out
    weights = load_file(os.path.join(directory, "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("pooler.")}, os.path.join(directory, "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing bert.pooler.dense.bias, bert.pooler.dense.weight"):
        load_model_dir(BertForSequenceClassification, directory, allow_new_head=True, num_labels=4)


def test_load_checkpoint_refuses_weights_of_another_model(tmp_path):
    path = save_tiny_checkpoint(str(tmp_path), 2)
    other = tiny_bart(vocab=70)
    optimizer, scheduler = build_optimizer(other, OPTIMIZER_CONFIG, 20)
    with pytest.raises(CheckpointError, match=r"wrong shape .*\[60, 16\] \(model \[70, 16\]\)"):
        load_checkpoint(path, other, optimizer, scheduler, None)


def test_optimizer_state_of_unknown_parameters_is_refused(tmp_path):
    path = save_tiny_checkpoint(str(tmp_path), 2)
    contents = read_checkpoint(path)
    contents.optimizer["bart.nonexistent.weight/moment1"] = np.zeros(3, np.float32)
    model = tiny_bart()
    optimizer, scheduler = build_optimizer(model, OPTIMIZER_CONFIG, 20)
    with pytest.raises(CheckpointError, match="state for bart.nonexistent.weight, which is not a parameter"):
        load_checkpoint(contents, model, optimizer, scheduler, None)
    del contents.optimizer["bart.nonexistent.weight/moment1"]
    del contents.optimizer["lm_head_weight/moment2"]
    model = tiny_bart()
    optimizer, scheduler = build_optimizer(model, OPTIMIZER_CONFIG, 20)
    with pytest.raises(CheckpointError, match="optimizer state does not match: missing lm_head_weight/moment2"):
        load_checkpoint(contents, model, optimizer, scheduler, None)


# ---------------------------------------------------------------------------- pickles
def test_restricted_unpickler_reads_what_paddle_save_writes(tmp_path):
    import paddle

    model = tiny_bart()
    paddle.save(model.state_dict(), str(tmp_path / "model_state.pdparams"))
    weights = read_pickled_state_dict("x", (tmp_path / "model_state.pdparams").read_bytes())
    assert set(weights) == set(model.state_dict())
    assert all(np.array_equal(weights[k], v.numpy()) for k, v in model.state_dict().items())


@pytest.mark.parametrize("wrap", [None, lambda p: {"weight": p}, lambda p: {"w": np.array([p], dtype=object)}],
                         ids=["top-level", "inside-a-state-dict", "inside-an-object-array"])
def test_crafted_model_state_pdparams_never_runs(tmp_path, wrap):
    from paddlenlp.transformers import AutoModelForConditionalGeneration

    marker = tmp_path / "PWNED"
    directory = tmp_path / "model"
    tiny_bart().save_pretrained(str(directory), safe_serialization=True)
    os.remove(directory / "model.safetensors")
    (directory / "model_state.pdparams").write_bytes(crafted_pickle(str(marker), wrap))
    with pytest.raises(CheckpointError, match=r"model_state\.pdparams: not a plain paddle state_dict .*refusing builtins\.exec"):
        load_model_dir(AutoModelForConditionalGeneration, str(directory))
    assert not marker.exists()


def test_object_arrays_are_refused_even_without_code(tmp_path):
    data = pickle.dumps({"w": np.array([1, "x"], dtype=object)}, protocol=4)
    with pytest.raises(CheckpointError, match="not a plain paddle state_dict|not a numeric array"):
        read_pickled_state_dict("m.pdparams", data)


def test_no_crafted_pickle_runs_on_resume_or_load(tmp_path):
    """Crafted pickles as every checkpoint file, in old and new layouts: resume, read, load, choose and
    load a model directory; none of them writes the marker."""
    from paddlenlp.transformers import AutoModelForConditionalGeneration

    marker = str(tmp_path / "PWNED")
    out = str(tmp_path / "out")
    # 1. a valid new checkpoint with pickles planted next to its files: read and loaded, never unpickled
    planted = save_tiny_checkpoint(out, 2)
    plant_pickles(planted, marker)
    contents = resolve_resume({"resume_from_checkpoint": "auto", "output_dir": out})
    model = tiny_bart()
    load_checkpoint(contents, model, *build_optimizer(model, OPTIMIZER_CONFIG, 20), None)
    load_model_dir(AutoModelForConditionalGeneration, resolve_model_dir(out))
    # 2. an old-format checkpoint made of crafted pickles: refused on resume, its model refused to load
    old = os.path.join(out, "checkpoint-4")
    os.makedirs(old)
    shutil.copy(os.path.join(planted, "config.json"), old)
    plant_pickles(old, marker)
    open(os.path.join(old, COMPLETE_MARKER), "w").write("step 4\n")
    with pytest.raises(CheckpointError, match="old pickled format"):
        resolve_resume({"resume_from_checkpoint": old, "output_dir": out})
    assert resolve_resume({"resume_from_checkpoint": "auto", "output_dir": out}).path == planted
    with pytest.raises(CheckpointError, match="refusing builtins.exec"):
        load_model_dir(AutoModelForConditionalGeneration, old)
    # 3. pickle bytes in place of each new-format file (checksums updated, as by a forger)
    for name in ("model.safetensors", "optimizer.safetensors", "trainer_state.json", "optimizer.json"):
        victim = os.path.join(str(tmp_path), f"copy-{len(name)}", "checkpoint-2")  # a copy keeps the name its step says
        shutil.copytree(planted, victim)
        rewrite(victim, name, crafted_pickle(marker, lambda p: {"state": p}), update_manifest=True)
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            read_checkpoint(victim)
        if name == "model.safetensors":
            with pytest.raises(CheckpointError, match="not a safetensors file"):
                load_model_dir(AutoModelForConditionalGeneration, victim)
        shutil.rmtree(victim)
    assert not os.path.exists(marker)


def test_master_weights_of_a_low_precision_model_round_trip():
    """multi_precision AdamW keeps fp32 master weights (and their accumulators) for bf16/fp16 parameters:
    they are saved under the parameter's name and restored exactly."""
    import paddle

    paddle.set_device("cpu")
    paddle.set_default_dtype("bfloat16")
    try:
        model = paddle.nn.Linear(4, 3)
    finally:
        paddle.set_default_dtype("float32")
    optimizer = paddle.optimizer.AdamW(learning_rate=0.1, parameters=model.parameters(), multi_precision=True)
    # CPU has no bf16 matmul to take a real step: create the state as the first step would, then change it
    create_accumulators(optimizer, model.parameters())
    arrays, meta = optimizer_state(optimizer, model)
    assert {"weight/master_weight", "weight/moment1", "bias/beta2_pow_acc"} <= set(arrays)
    arrays = {k: v + 1 for k, v in arrays.items()}
    fresh = paddle.optimizer.AdamW(learning_rate=0.1, parameters=model.parameters(), multi_precision=True)
    apply_optimizer_state(fresh, model, arrays, meta, "optimizer.safetensors")
    again, _ = optimizer_state(fresh, model)
    assert sorted(again) == sorted(arrays) and all(np.array_equal(arrays[k], again[k]) for k in arrays)


def test_a_forged_manifest_cannot_point_outside_the_checkpoint(saved):
    marker = os.path.join(saved, COMPLETE_MARKER)
    manifest = json.loads(open(marker).read())
    manifest["files"]["../../../../dev/zero"] = {"size": 1, "sha256": "0" * 64}
    open(marker, "w").write(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"CHECKPOINT_COMPLETE: bad entry '\.\./\.\./\.\./\.\./dev/zero'"):
        read_checkpoint(saved)
