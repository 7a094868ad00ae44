"""Paddle Inference export (paddle_finetune/inference, tools/export_inference.py): the exported static graphs,
on CPU predictors, predict exactly like the dygraph model (logits, labels, and generated ids: greedy, beam search,
seeded sampling), through the prediction tools' --inference_model too; refusals leave the destination as it was."""
import json
import os

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")
pytest.importorskip("paddlenlp")

from paddle_finetune.commands import export_inference as cli  # noqa: E402
from paddle_finetune.commands import fill_mask, generate_text, predict_classification, predict_summarization  # noqa: E402
from paddle_finetune.errors import ConfigError, VerificationError  # noqa: E402
from paddle_finetune.inference.export import export_inference  # noqa: E402
from paddle_finetune.inference.files import INFERENCE_CONFIG  # noqa: E402
from paddle_finetune.inference.predictor import load_exported  # noqa: E402
from paddle_models import RUN_SETTINGS, make_paddle_dir, make_vocab_dir  # noqa: E402

PROGRAM = ".json" if int(paddle.__version__.split(".")[0]) >= 3 else ".pdmodel"


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    return make_vocab_dir(str(tmp_path_factory.mktemp("vocab")))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, vocab):
    """One source and its export per task, shared by the tests of this module (exports take seconds)."""
    cache = {}

    def get(paddle_class, wordpiece=False):
        key = (paddle_class, wordpiece)
        if key not in cache:
            d = tmp_path_factory.mktemp(paddle_class)
            src, model, tokenizer = make_paddle_dir(d / "src", paddle_class, vocab, wordpiece=wordpiece)
            report = export_inference(src, str(d / "exported"))
            cache[key] = dict(src=src, dst=str(d / "exported"), model=model, tokenizer=tokenizer, report=report)
        return cache[key]
    return get


def _random_batch(vocab_size, rows=3, width=11, seed=0, first=5):
    rng = np.random.RandomState(seed)
    ids = rng.randint(first, vocab_size, size=(rows, width)).astype("int64")
    mask = np.ones((rows, width), dtype="float32")
    for row in range(1, rows):  # right padding of different lengths
        mask[row, width - 2 * row - 1:] = 0
    return ids, mask


CLASSIFIERS = ["BertForSequenceClassification", "RobertaForSequenceClassification", "ErnieForSequenceClassification"]


@pytest.mark.parametrize("paddle_class", CLASSIFIERS)
def test_classifier_logits_and_labels_match_dygraph(exported, paddle_class):
    e = exported(paddle_class)
    assert e["report"]["verification"]["passed"] and e["report"]["task"] == "classification"
    assert set(os.listdir(e["dst"])) >= {"model" + PROGRAM, "model.pdiparams", INFERENCE_CONFIG, "label_map.json"}
    task, model = load_exported(e["dst"])
    ids, mask = _random_batch(e["model"].config.vocab_size, first=5)
    ids[mask == 0] = e["tokenizer"].pad_token_id
    feed = dict(input_ids=paddle.to_tensor(ids), token_type_ids=paddle.zeros(ids.shape, "int64"),
                attention_mask=paddle.to_tensor(mask))
    with paddle.no_grad():
        ours = e["model"](**feed, return_dict=True).logits.numpy()
    theirs = model(**feed).logits.numpy()
    assert np.abs(ours - theirs).max() <= 1e-5 and (ours.argmax(-1) == theirs.argmax(-1)).all()


def test_masked_lm_logits_and_fill_mask_match_dygraph(exported, capsys):
    e = exported("BertForMaskedLM")
    _, model = load_exported(e["dst"])
    ids, mask = _random_batch(e["model"].config.vocab_size)
    with paddle.no_grad():
        ours = e["model"](input_ids=paddle.to_tensor(ids), attention_mask=paddle.to_tensor(mask), return_dict=True).logits.numpy()
    theirs = model(input_ids=paddle.to_tensor(ids), attention_mask=paddle.to_tensor(mask)).logits.numpy()
    assert np.abs(ours - theirs)[mask.astype(bool)].max() <= 1e-5
    text = "探险家[MASK][MASK]带领队伍"
    assert fill_mask.main([e["src"], text, "--device=cpu"]) == 0
    dygraph = capsys.readouterr().out
    assert fill_mask.main(["--inference_model", e["dst"], text]) == 0
    assert capsys.readouterr().out == dygraph and "mask 2:" in dygraph


def test_causal_lm_logits_and_generations_match_dygraph(exported, capsys):
    e = exported("GPTForCausalLM")
    _, model = load_exported(e["dst"])
    ids, _ = _random_batch(e["model"].config.vocab_size, rows=2, width=9)
    with paddle.no_grad():
        ours = e["model"](input_ids=paddle.to_tensor(ids), use_cache=False, return_dict=True).logits.numpy()
    assert np.abs(ours - model(input_ids=paddle.to_tensor(ids), return_dict=True).logits.numpy()).max() <= 1e-5
    kwargs = dict(max_new_tokens=12, eos_token_id=-1, pad_token_id=5, use_cache=True)  # no eos: all 12 steps
    for strategy in (dict(decode_strategy="greedy_search"), dict(decode_strategy="sampling", top_k=5)):
        runs = []
        for m in (e["model"], model):
            paddle.seed(7)
            with paddle.no_grad():
                runs.append(m.generate(input_ids=paddle.to_tensor(ids[:1]), **kwargs, **strategy)[0].numpy().tolist())
        assert runs[0] == runs[1] and len(runs[0][0]) == 12, strategy
    capsys.readouterr()  # the export's log lines (stdout: this is not a prediction command) are not the tool's
    for args in (["hello world", "--max_new_tokens=8"], ["the lazy", "--strategy=top_p", "--seed=3", "--num_return=2"]):
        assert generate_text.main([e["src"], *args, "--device=cpu"]) == 0
        dygraph = capsys.readouterr().out
        assert generate_text.main(["--inference_model", e["dst"], *args]) == 0
        assert capsys.readouterr().out == dygraph


def test_summarization_greedy_and_beam_search_match_dygraph(exported):
    from paddle_finetune.tasks.summarization import PREDICTION_DEFAULTS, generate_ids, special_ids, tokenize_examples

    e = exported("BartForConditionalGeneration", wordpiece=True)
    v = e["report"]["verification"]
    assert v["passed"] and set(v["decoded"]) == {"greedy", "beam search (3 beams)"}  # the run's num_beams
    assert sorted(e["report"]["graphs"]) == ["cross_cache", "decoder_step", "encoder"]
    _, model = load_exported(e["dst"])
    tokenizer = e["tokenizer"]
    texts = ["探险家带领队伍抵达了海边", "北京上海足球联赛新变化", "hello world", "the quick brown fox jumps over the lazy dog"]
    for settings in (dict(num_beams=1), dict(num_beams=3), dict(num_beams=4, min_target_length=3, max_target_length=9)):
        cfg = {**PREDICTION_DEFAULTS, **RUN_SETTINGS, **settings, "eval_batch_size": 3}
        ids = special_ids(tokenizer, e["model"])
        features = tokenize_examples([{"source": t, "target": ""} for t in texts], tokenizer, cfg, ids["eos"])
        ours = [r.tolist() for r in generate_ids(e["model"], features, cfg, ids)]
        assert [r.tolist() for r in generate_ids(model, features, cfg, ids)] == ours, settings


def test_prediction_tools_give_the_same_output_row_for_row(exported, tmp_path):
    e = exported("BertForSequenceClassification")
    rows = ["北京上海足球联赛", "hello world", "探险家带领队伍抵达了海边", "the lazy dog", "新变化"]
    data = tmp_path / "input.tsv"
    data.write_text("text\tlabel\n" + "".join(f"{t}\t体育\n" for t in rows), encoding="utf-8")
    assert predict_classification.main([e["src"], str(data), f"--output={tmp_path / 'a.jsonl'}", "--device=cpu"]) == 0
    assert predict_classification.main(["--inference_model", e["dst"], str(data), f"--output={tmp_path / 'b.jsonl'}"]) == 0
    assert (tmp_path / "a.jsonl").read_text(encoding="utf-8") == (tmp_path / "b.jsonl").read_text(encoding="utf-8")
    metrics = [json.loads((tmp_path / f"{n}.metrics.json").read_text(encoding="utf-8")) for n in "ab"]
    assert {k: v for k, v in metrics[0].items() if k != "model"} == {k: v for k, v in metrics[1].items() if k != "model"}

    s = exported("BartForConditionalGeneration", wordpiece=True)
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"content": t, "title": t[:2]}, ensure_ascii=False) + "\n" for t in rows * 2),
                     encoding="utf-8")
    assert predict_summarization.main([s["src"], str(texts), f"--output={tmp_path / 'c.jsonl'}", "--batch_size=4",
                                       "--device=cpu"]) == 0
    assert predict_summarization.main(["--inference_model", s["dst"], str(texts), f"--output={tmp_path / 'd.jsonl'}",
                                       "--batch_size=4"]) == 0
    ours, theirs = ((tmp_path / f"{n}.jsonl").read_text(encoding="utf-8").splitlines() for n in "cd")
    assert len(ours) == 10 and ours == theirs


# ------------------------------------------------------------------ refusals
def _tree(path):
    return sorted(os.path.relpath(os.path.join(r, f), path) for r, _, fs in os.walk(path) for f in fs)


def test_refusals_leave_the_destination_as_it_was(exported, tmp_path, vocab, capsys):
    e = exported("BertForSequenceClassification")
    before = _tree(e["src"])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    for dst, message in ((str(busy), "is not empty"), (e["src"], "is the source"),
                         (os.path.join(e["src"], "deploy"), "inside the source")):
        with pytest.raises(ConfigError, match=message):
            export_inference(e["src"], dst)
    base, _, _ = make_paddle_dir(tmp_path / "base", "BertModel", vocab)
    with pytest.raises(ConfigError, match=r"BertModel has no Paddle Inference export here; exportable: "):
        export_inference(base, str(tmp_path / "x"))
    with pytest.raises(VerificationError, match=r"nothing was written.*max abs diff"):
        export_inference(e["src"], str(tmp_path / "strict"), tolerance=-1)
    assert _tree(e["src"]) == before and (busy / "keep.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["base", "busy"]  # no destination, no stage left behind

    assert cli.main([base, str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "BertModel has no Paddle Inference export" in err[-1]
    # The prediction tools: the wrong task, both models, the GPU.
    texts = tmp_path / "texts.txt"
    texts.write_text("hello world\n", encoding="utf-8")
    assert predict_summarization.main(["--inference_model", e["dst"], str(texts)]) == 2
    assert "holds a classification model (BertForSequenceClassification), not a summarization one" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        predict_classification.main([e["src"], "hello", "--inference_model", e["dst"]])
    assert exit_.value.code == 2 and "give MODEL or --inference_model DIR" in capsys.readouterr().err
    assert predict_classification.main(["--inference_model", e["dst"], "hello", "--device=gpu"]) == 2
    assert "runs on Paddle Inference's CPU predictor" in capsys.readouterr().err


@pytest.mark.skipif(PROGRAM == ".json", reason="paddle 3 reads both program formats")
def test_paddle_2_refuses_a_paddle_3_program_by_name(exported, tmp_path):
    import shutil

    e = exported("BertForMaskedLM")
    copy = tmp_path / "from-paddle-3"
    shutil.copytree(e["dst"], copy)
    info = json.loads((copy / INFERENCE_CONFIG).read_text())
    os.rename(copy / "model.pdmodel", copy / "model.json")
    info["graphs"]["model"].update(program="model.json")
    info["paddle_version"] = "3.3.1"
    (copy / INFERENCE_CONFIG).write_text(json.dumps(info))
    with pytest.raises(ConfigError, match=r"in paddle 3's PIR format, which paddle 2\.6\.\d cannot read; export it again"):
        load_exported(str(copy))


def test_onednn_is_on_for_logits_graphs_and_off_for_generation_steps_unless_chosen(exported, tmp_path):
    """--onednn=auto: on where it was measured faster (one graph per batch), off for decoding steps (BENCHMARKS.md)."""
    from paddle_finetune.commands import export_inference as cli

    for paddle_class, expected in (("BertForSequenceClassification", True), ("GPTForCausalLM", False),
                                   ("BartForConditionalGeneration", False)):
        e = exported(paddle_class)
        with open(os.path.join(e["dst"], "inference_config.json"), encoding="utf-8") as f:
            assert json.load(f)["onednn"] is expected, paddle_class
    src = exported("GPTForCausalLM")["src"]
    assert cli.main([src, str(tmp_path / "on"), "--onednn=on"]) == 0
    with open(tmp_path / "on" / "inference_config.json", encoding="utf-8") as f:
        assert json.load(f)["onednn"] is True


def test_an_earlier_export_is_not_replaced_either(exported):
    """Exports publish by one rename into an absent or empty directory: even their own earlier output is kept."""
    e = exported("BertForSequenceClassification")
    before = _tree(e["dst"])
    with pytest.raises(ConfigError, match=r"is not empty \(.*\); export_inference never writes over files"):
        export_inference(e["src"], e["dst"])
    assert _tree(e["dst"]) == before
