"""Issue #12 end to end, through the real entry points: the model a run keeps is the best one, found at every
evaluation, kept through rotation and moves, loaded back at the end, scored on test, exported to output_dir
(from_pretrained loads it) and reported; early stopping; eval-only reproduces the logged metrics."""
import json
import os
import shutil

import numpy as np
import pytest

from helpers import ROOT, read_jsonl, run_entry, tiny_bart_arg

SAMPLE = os.path.join(ROOT, "datasets", "sample_summarization")
SPLITS = [f"--train_file={SAMPLE}/train.jsonl", f"--dev_file={SAMPLE}/dev.jsonl", f"--test_file={SAMPLE}/test.jsonl"]
RUN = [tiny_bart_arg(d_model=32), "--device=cpu", "--report_to=none", "--logging_steps=1", "--train_batch_size=16",
       "--max_train_samples=256", "--max_eval_samples=24", "--eval_batch_size=8", "--max_source_length=64",
       "--max_target_length=12", "--learning_rate=3e-3", *SPLITS]


def ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def dev_metrics(out):
    return {m["step"]: m for m in read_jsonl(out / "metrics.jsonl") if "split" not in m}


def weights(directory):
    from safetensors.numpy import load_file

    return load_file(os.path.join(directory, "model.safetensors"))


@pytest.fixture(scope="module")
def misaligned(tmp_path_factory):
    """eval_steps=3 with save_steps=5: most evaluations fall between saves."""
    out = tmp_path_factory.mktemp("sel") / "out"
    result = ok(run_entry(["train.py", f"--output_dir={out}", *RUN, "--max_steps=15", "--eval_steps=3", "--save_steps=5",
                           "--save_total_limit=1"]))
    return out, result


def test_the_best_is_tracked_at_every_evaluation_and_kept_on_disk(misaligned):
    out, result = misaligned
    metrics = dev_metrics(out)
    assert sorted(metrics) == [3, 6, 9, 12, 15]
    best_step = max(metrics, key=lambda s: (metrics[s]["rougeL"], -s))  # the first of equal scores stays the best
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["best_step"] == best_step and state["best_metric"] == metrics[best_step]["rougeL"]
    assert state["best_checkpoint"] == f"checkpoint-{best_step}", "by name, relative to output_dir"
    assert (out / state["best_checkpoint"] / "CHECKPOINT_COMPLETE").is_file(), "saved even between saves, kept by rotation"
    assert (out / "checkpoint-15").is_dir(), "and the newest"
    assert "is not a multiple of save_steps=5" in result.stdout  # warned once
    assert result.stdout.count("is not a multiple of save_steps") == 1
    results = json.loads((out / "all_results.json").read_text())
    assert results["best_step"] == best_step and results["final_model_step"] == best_step
    assert f"final model: step {best_step}" in result.stdout


def test_the_kept_model_is_exported_scored_and_loads_with_from_pretrained(misaligned):
    out, _ = misaligned
    from paddlenlp.transformers import BartForConditionalGeneration

    state = json.loads((out / "trainer_state.json").read_text())
    best = out / state["best_checkpoint"]
    exported, kept = weights(out), weights(best)
    assert sorted(exported) == sorted(kept) and all(np.array_equal(exported[k], kept[k]) for k in kept)
    model = BartForConditionalGeneration.from_pretrained(str(out))  # the HF / PaddleNLP convention
    loaded = {k: v.numpy() for k, v in model.state_dict().items()}
    assert all(np.array_equal(loaded[k], kept[k]) for k in kept)
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["max_new_tokens"] == 12 and generation["max_length"] == 12, "the settings the run generated with"
    # the dev predictions and final dev metrics are the kept model's, not the last evaluation's
    results = json.loads((out / "all_results.json").read_text())
    best_dev = dev_metrics(out)[state["best_step"]]
    assert {k: results[f"eval_{k}"] for k in ("rouge1", "rougeL", "loss", "gen_len")} == {k: best_dev[k] for k in ("rouge1", "rougeL", "loss", "gen_len")}
    test = [m for m in read_jsonl(out / "metrics.jsonl") if m.get("split") == "test"]
    assert len(test) == 1 and test[0]["step"] == state["best_step"] and results["test_rougeL"] == test[0]["rougeL"]
    assert len(read_jsonl(out / "predictions_test.jsonl")) == 24
    assert 0 < results["eval_gen_len"] <= 12, "gen_len counts generated tokens, within max_target_length"


def test_eval_only_reproduces_the_metrics_of_the_kept_checkpoint(misaligned, tmp_path):
    out, _ = misaligned
    state = json.loads((out / "trainer_state.json").read_text())
    ev = tmp_path / "eval"
    result = ok(run_entry(["train.py", "--do_train=False", f"--pretrained_model={out / state['best_checkpoint']}",
                           f"--output_dir={ev}", *RUN]))
    records = read_jsonl(ev / "metrics.jsonl")
    assert [r["split"] for r in records] == ["dev", "test"]
    logged = dev_metrics(out)[state["best_step"]]
    assert {k: v for k, v in records[0].items() if k not in ("step", "split")} == {k: v for k, v in logged.items() if k != "step"}
    trained_test = [m for m in read_jsonl(out / "metrics.jsonl") if m.get("split") == "test"][0]
    assert {k: v for k, v in records[1].items() if k not in ("step", "split")} == {k: v for k, v in trained_test.items() if k not in ("step", "split")}
    assert not [n for n in os.listdir(ev) if n.startswith("checkpoint-")], "nothing trained"
    assert json.loads((ev / "all_results.json").read_text())["eval_rougeL"] == logged["rougeL"]
    assert "do_train=False: evaluating" in result.stdout


def test_predicting_from_another_directory_uses_the_kept_model(misaligned, tmp_path):
    out, _ = misaligned
    state = json.loads((out / "trainer_state.json").read_text())
    texts = tmp_path / "texts.txt"
    texts.write_text("3月1日，杭州图书馆对外表示，已经正式启动科普讲座系列。\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    predictions = []
    for model_dir in (out, out / state["best_checkpoint"]):
        result = ok(run_entry([os.path.join(ROOT, "tools", "predict_summarization.py"), str(model_dir), str(texts),
                               f"--output={elsewhere / 'p.jsonl'}"], cwd=elsewhere))
        predictions.append(read_jsonl(elsewhere / "p.jsonl"))
    assert f"using the final model in {out}" in ok(result).stderr or "using the model in" in result.stderr
    assert predictions[0] == predictions[1], "the exported model is the best checkpoint's"


def test_a_moved_output_dir_resumes_with_its_best_kept_through_rotation(misaligned, tmp_path):
    out, _ = misaligned
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    state = json.loads((moved / "trainer_state.json").read_text())
    result = ok(run_entry(["train.py", f"--output_dir={moved}", *RUN, "--max_steps=21", "--eval_steps=3", "--save_steps=5",
                           "--save_total_limit=1", "--resume_from_checkpoint=auto"]))
    assert "resumed from" in result.stdout and f"{moved}/checkpoint-15" in result.stdout
    after = json.loads((moved / "trainer_state.json").read_text())
    assert (moved / after["best_checkpoint"]).is_dir(), "the best is resolved in the moved directory and kept"
    if after["best_step"] == state["best_step"]:  # no later evaluation beat it: the old best survived rotation
        assert (moved / state["best_checkpoint"]).is_dir()
    assert (out / state["best_checkpoint"]).is_dir(), "the original directory is untouched"
    ckpts = sorted(p.name for p in moved.iterdir() if p.name.startswith("checkpoint-"))
    assert ckpts == sorted({after["best_checkpoint"], "checkpoint-21"}), ckpts


def test_early_stopping_stops_saves_and_resumes(tmp_path):
    out = tmp_path / "out"
    # a threshold no evaluation can beat: the first sets the best, the second is one without improvement
    args = ["train.py", f"--output_dir={out}", *RUN, "--max_steps=30", "--eval_steps=2", "--save_steps=10",
            "--early_stopping_threshold=1000.0"]
    result = ok(run_entry([*args, "--early_stopping_patience=1"]))
    assert "early stopping at step 4" in result.stdout
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")][-1] == 4
    assert (out / "checkpoint-4" / "CHECKPOINT_COMPLETE").is_file(), "the stop is saved"
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["stopped_early_at"] == 4 and state["best_step"] == 2
    # resumed with the same patience: nothing more to train
    again = ok(run_entry([*args, "--early_stopping_patience=1", "--resume_from_checkpoint=auto"]))
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")][-1] == 4
    assert "final model: step 2" in again.stdout
    # with more patience it trains on, from where it stopped
    more = ok(run_entry([*args, "--early_stopping_patience=3", "--resume_from_checkpoint=auto"]))
    steps = [r["step"] for r in read_jsonl(out / "train_log.jsonl")]
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] == 8, steps
    assert "early stopping at step 8" in more.stdout


@pytest.mark.parametrize("trainer, tiny, metric", [
    ("train_classification.py", "--model_config={'hidden_size': 32, 'num_hidden_layers': 1, 'num_attention_heads': 2, "
     "'intermediate_size': 64}", "accuracy"),
    ("train_mlm.py", "--model_config={'hidden_size': 32, 'num_hidden_layers': 1, 'num_attention_heads': 2, "
     "'intermediate_size': 64}", "perplexity"),
    ("train_clm.py", "--model_config={'hidden_size': 32, 'num_hidden_layers': 1, 'num_attention_heads': 2, "
     "'intermediate_size': 64}", "perplexity"),
])
def test_every_trainer_keeps_exports_and_re_evaluates_its_best(tmp_path, trainer, tiny, metric):
    out = tmp_path / "out"
    common = [tiny, "--device=cpu", "--report_to=none", "--max_train_samples=320", "--max_eval_samples=64",
              "--train_batch_size=32", "--learning_rate=3e-3"]
    ok(run_entry([trainer, f"--output_dir={out}", *common, "--max_steps=8", "--eval_steps=2", "--save_steps=4"]))
    state = json.loads((out / "trainer_state.json").read_text())
    metrics = dev_metrics(out)
    lower = metric == "perplexity"
    # the first evaluation of the best value wins (a later tie is not an improvement); step 0 is only a reference
    best_step = min((s for s in metrics if s > 0), key=lambda s: (metrics[s][metric] * (1 if lower else -1), s))
    assert state["best_step"] == best_step and state["metric_for_best"] == metric
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    results = json.loads((out / "all_results.json").read_text())
    assert results["final_model_step"] == best_step and results[f"eval_{metric}"] == metrics[best_step][metric]
    assert "loss" in metrics[best_step], "every trainer reports its dev loss"
    ev = tmp_path / "eval"
    ok(run_entry([trainer, "--do_train=False", f"--pretrained_model={out}", f"--output_dir={ev}", *common]))
    again = read_jsonl(ev / "metrics.jsonl")[0]
    assert again["split"] == "dev" and again[metric] == metrics[best_step][metric], "the exported model is the best one"
