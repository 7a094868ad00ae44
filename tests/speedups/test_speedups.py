"""speedups.py (issue #7): the CPU speed-ups keep the numbers.

* use_fast_cpu_kernels: the linear and layer-norm PyLayers give the same outputs and gradients as
  paddle's layers; the expanded attention mask gives the same attention; a BART trains to the same
  losses over several optimizer steps, to float32 tolerance. The numpy dropout applies paddle's
  upscale_in_train formula to its mask, keeps 1-p of the units, and replays from a saved RNG state.
* seq2seq_loss (LM head only at real target positions) equals the plain full-logits loss.
"""
import copy
import os
import subprocess
import sys

import numpy as np
from paddle_finetune.paths import PROJECT_ROOT
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paddle_finetune.speedups import versions as speedup_versions
import train
from paddle_finetune.data.batching import epoch_batches, to_tensors
from paddle_finetune.runtime.environment import _launch_env, cpu_threads, setup_device
from paddle_finetune.runtime.rng import get_rng_state, set_rng_state, set_seed
from paddle_finetune.speedups.generation import beam_scorer_process, fast_beam_search
from paddle_finetune.speedups.layers import use_fast_cpu_kernels
from paddle_finetune.speedups.process import keep_freed_memory, mkl_cpu_type
from paddle_finetune.speedups.versions import WRITTEN_FOR, version_supported
from paddle_finetune.tasks.summarization import collate, generate_ids, load_split, seq2seq_loss, special_ids, tokenize_examples
from paddle_finetune.training.optimization import build_optimizer
ROOT = PROJECT_ROOT


def _tiny_setup(tmp_path, seed=7, dropout=0.1):
    import paddle
    from paddlenlp.transformers import BartConfig, BartForConditionalGeneration, BertTokenizer

    from paddle_finetune.data.text import write_char_vocab

    paddle.set_device("cpu")
    cfg = dict(train.CONFIG, max_source_length=64, max_target_length=16, learning_rate=3e-3, warmup_steps=1)
    rows = load_split(cfg, os.path.join(ROOT, "datasets", "sample_summarization", "train.jsonl"), "train")[:48]
    vocab = write_char_vocab((t for r in rows for t in (r["source"], r["target"])), str(tmp_path / "vocab.txt"))
    tok = BertTokenizer(vocab_file=vocab)
    paddle.seed(seed)
    config = BartConfig(vocab_size=len(tok.vocab), d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
                        dropout=dropout, attention_dropout=dropout, activation_dropout=dropout, pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                        decoder_start_token_id=tok.cls_token_id, forced_eos_token_id=tok.sep_token_id)
    model = BartForConditionalGeneration(config)
    ids = special_ids(tok, model)
    feats = tokenize_examples(rows, tok, cfg, ids["eos"])
    lengths = [len(f["input_ids"]) + len(f["labels"]) for f in feats]
    batches = [collate([feats[i] for i in b], pad_id=ids["pad"], decoder_start_id=ids["decoder_start"])
               for b in epoch_batches(lengths, 8, 1, 0, 42, 0, True)]
    return cfg, model, batches


def _train_losses(cfg, model, batches, steps, seed=11):
    """The step of train_utils.run_training (fp32): loss, backward, clip + AdamW, schedule."""
    import paddle

    optimizer, scheduler = build_optimizer(model, cfg, steps)
    paddle.seed(seed)
    model.train()
    losses = []
    for batch in batches[:steps]:
        batch = batch.arrays
        loss = seq2seq_loss(model, to_tensors(batch))
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        scheduler.step()
        losses.append(float(loss))
    return losses


def _assert_same_layer(ref, fast, x, rtol):
    """ref and its fast copy: the same output and x/weight/bias gradients; under no_grad the same values."""
    import paddle

    g = paddle.randn(ref(x).shape)
    results = []
    for layer in (ref, fast):
        xx = x.clone()
        xx.stop_gradient = False
        y = layer(xx)
        (y * g).sum().backward()
        results.append([y.numpy(), xx.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy()])
    for name, a, b in zip(("out", "dx", "dweight", "dbias"), *results):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol, err_msg=name)
    with paddle.no_grad():  # inference keeps paddle's own layer, same values
        np.testing.assert_allclose(fast(x).numpy(), ref(x).numpy(), rtol=1e-6, atol=1e-6)


def test_fast_linear_same_gradients():
    import paddle

    paddle.set_device("cpu")
    paddle.seed(0)
    ref = paddle.nn.Linear(24, 40)
    fast = copy.deepcopy(ref)
    assert use_fast_cpu_kernels(fast)["linear"] == 1
    _assert_same_layer(ref, fast, paddle.randn([3, 5, 24]), rtol=1e-5)


def test_fast_layer_norm_same_gradients():
    import paddle

    paddle.set_device("cpu")
    paddle.seed(0)
    ref = paddle.nn.LayerNorm(48)
    with paddle.no_grad():
        ref.weight.set_value(paddle.randn([48]))
        ref.bias.set_value(paddle.randn([48]))
    fast = copy.deepcopy(ref)
    assert use_fast_cpu_kernels(fast)["layer_norm"] == 1
    # off-centre and wide, so mean and variance both matter
    _assert_same_layer(ref, fast, paddle.randn([4, 7, 48]) * 3.0 + 1.5, rtol=1e-4)


def test_fast_attention_mask_same_outputs_and_gradients():
    import paddle

    paddle.set_device("cpu")
    paddle.seed(1)
    ref = paddle.nn.MultiHeadAttention(32, 4)
    fast = copy.deepcopy(ref)
    counts = use_fast_cpu_kernels(fast)
    assert counts["attention"] == 1 and counts["linear"] == 4
    query, memory = paddle.randn([3, 5, 32]), paddle.randn([3, 9, 32])
    padding = paddle.to_tensor(np.array([[0] * 9, [0] * 6 + [1] * 3, [0] * 2 + [1] * 7]), dtype="float32")
    mask = (padding * -1e4).unsqueeze([1, 2])  # [batch, 1, 1, keys], as paddlenlp's BART builds it
    results = []
    for layer in (ref, fast):
        q, m = query.clone(), memory.clone()
        q.stop_gradient = m.stop_gradient = False
        out = layer(q, m, m, attn_mask=mask)
        out.sum().backward()
        results.append([out.numpy(), q.grad.numpy(), m.grad.numpy(), layer.q_proj.weight.grad.numpy()])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_fast_dropout_is_paddles_formula_on_its_mask():
    import paddle

    paddle.set_device("cpu")
    layer = paddle.nn.Dropout(0.25)
    assert use_fast_cpu_kernels(layer)["dropout"] == 1
    set_seed(3)
    x = paddle.rand([200, 500]) + 0.5  # no zeros, so a zero output is a dropped unit
    x.stop_gradient = False
    y = layer(x)
    kept = y.numpy() != 0
    # 100000 units: the kept share is within 5 standard deviations of 0.75
    assert abs(kept.mean() - 0.75) < 5 * np.sqrt(0.75 * 0.25 / kept.size)
    np.testing.assert_allclose(y.numpy(), np.where(kept, x.numpy() / 0.75, 0.0), rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.where(kept, 1 / 0.75, 0.0), rtol=1e-6)
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())


def test_fast_dropout_masks_replay_from_saved_rng_state():
    import paddle

    paddle.set_device("cpu")
    layer = paddle.nn.Dropout(0.5)
    use_fast_cpu_kernels(layer)
    x = paddle.ones([64, 64])
    set_seed(5)
    first = layer(x).numpy()
    state = get_rng_state()
    after = [layer(x).numpy() for _ in range(2)]
    assert not np.array_equal(after[0], after[1])  # a new mask every call
    set_rng_state(state)
    np.testing.assert_array_equal(np.stack([layer(x).numpy() for _ in range(2)]), np.stack(after))
    set_seed(5)
    np.testing.assert_array_equal(layer(x).numpy(), first)


def test_fast_cpu_training_same_losses(tmp_path):
    """Without dropout (the only kernel with a different random stream), training is the same run."""
    cfg, model, batches = _tiny_setup(tmp_path, dropout=0.0)
    assert len(batches) >= 5
    fast_model = copy.deepcopy(model)
    counts = use_fast_cpu_kernels(fast_model)
    # every q/k/v/out/fc layer, every layer norm and attention of the encoder and decoder
    assert counts["linear"] > 10 and counts["layer_norm"] >= 8 and counts["attention"] == 6 and counts["positions"] == 2
    batch = to_tensors(batches[0].arrays)
    for m in (model, fast_model):
        m.train()
        seq2seq_loss(m, batch).backward()
    for (name, p), q in zip(model.named_parameters(), fast_model.parameters()):
        scale = float(np.abs(p.grad.numpy()).max()) + 1e-6  # k_proj biases have an exactly-zero true gradient
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-4, atol=1e-4 * scale, err_msg=name)
        p.clear_gradient(), q.clear_gradient()
    base = _train_losses(cfg, model, batches, steps=5)
    fast = _train_losses(cfg, fast_model, batches, steps=5)
    assert base[0] > base[-1]  # it learns, so later steps depend on earlier updates
    np.testing.assert_allclose(fast, base, rtol=2e-4, atol=1e-5)


def test_fast_cpu_training_with_dropout_learns(tmp_path):
    cfg, model, batches = _tiny_setup(tmp_path, dropout=0.1)
    assert use_fast_cpu_kernels(model)["dropout"] > 0
    set_seed(11)
    losses = _train_losses(cfg, model, batches, steps=6)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_keep_freed_memory_respects_the_users_setting(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert keep_freed_memory() is False


HEAP_PROBE = """
import ctypes
from paddle_finetune.speedups.process import keep_freed_memory, release_free_memory

def rss_mb():
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) // 1024

print("before policy:", release_free_memory())
print("policy:", keep_freed_memory())
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
blocks = []
for size in {sizes}:
    blocks.append(libc.malloc(size))
    ctypes.memset(blocks[-1], 1, size)
live = libc.malloc(4096)  # a live block above the freed ones: they are holes, not the heap's top
ctypes.memset(live, 1, 4096)
for block in blocks:
    libc.free(block)
held = rss_mb()
print("released:", release_free_memory())
print("held, after:", held, rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap")
@settings(max_examples=3, deadline=None)
@given(sizes=st.lists(st.integers(1 << 20, 24 << 20), min_size=10, max_size=30).filter(lambda s: sum(s) > 150 << 20))
def test_free_memory_kept_in_the_heap_goes_back_at_a_phase_change(sizes):
    result = subprocess.run([sys.executable, "-c", HEAP_PROBE.format(sizes=sizes)], capture_output=True, text=True,
                            timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")})
    assert result.returncode == 0, result.stderr[-2000:]
    out = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert out["before policy"] == "False" and out["policy"] == "True" and out["released"] == "True"
    held, after = (int(v) for v in out["held, after"].split())
    assert held - after > 0.8 * (sum(sizes) >> 20), (held, after, sum(sizes) >> 20)


def test_real_position_loss_equals_full_logits_loss(tmp_path):
    import paddle
    cfg, model, batches = _tiny_setup(tmp_path)
    model.eval()
    batch = to_tensors(batches[0].arrays)
    assert int((batch["labels"] == -100).sum()) > 0  # the batch has padded label slots
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   decoder_input_ids=batch["decoder_input_ids"], use_cache=False, return_dict=False)
    logits = (logits[0] if isinstance(logits, (tuple, list)) else logits).numpy()
    logits = logits.reshape([-1, logits.shape[-1]]).astype("float64")
    labels = batch["labels"].numpy().reshape([-1])
    real = labels != -100
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    full = -log_probs[real, labels[real]].mean()  # mean over real target tokens of the full-logits loss
    with paddle.no_grad():
        ours = seq2seq_loss(model, batch)
    np.testing.assert_allclose(float(ours), float(full), rtol=1e-5)


@pytest.mark.parametrize("threads", ["3", None])
def test_cpu_threads(monkeypatch, threads):
    monkeypatch.setitem(_launch_env, "OMP_NUM_THREADS", threads)
    monkeypatch.delenv("PADDLE_LOCAL_SIZE", raising=False)
    monkeypatch.delenv("PADDLE_TRAINERS_NUM", raising=False)
    assert cpu_threads() == (3 if threads else max(1, os.cpu_count() or 1))


@pytest.mark.parametrize("environ, expected", [("1", "all"), ("3", 3), (None, "all")])
def test_cpu_threads_when_paddle_was_imported_before_the_launch_env_was_recorded(monkeypatch, environ, expected):
    """A script that imports paddle first: its OMP_NUM_THREADS=1 is paddle's default as often as the user's, and
    reading it as the user's ran the benchmark's training on one of two cores (3300 instead of 5400 tok/s)."""
    monkeypatch.delitem(_launch_env, "OMP_NUM_THREADS", raising=False)
    if environ is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", environ)
    for name in ("PADDLE_LOCAL_SIZE", "PADDLE_TRAINERS_NUM", "PADDLE_TRAINER_ID"):
        monkeypatch.delenv(name, raising=False)
    assert cpu_threads() == (max(1, os.cpu_count() or 1) if expected == "all" else expected)



def test_no_stride_kernels_same_losses(tmp_path):
    """setup_device('cpu') turns paddle's strided views off (contiguous transposes): same losses and greedy ids."""
    import paddle

    cfg, model, batches = _tiny_setup(tmp_path)
    other = copy.deepcopy(model)
    before = paddle.get_flags(["FLAGS_use_stride_kernel"])["FLAGS_use_stride_kernel"]
    try:
        paddle.set_flags({"FLAGS_use_stride_kernel": True})
        strided = _train_losses(cfg, model, batches, steps=4)
        setup_device("cpu")
        assert paddle.get_flags(["FLAGS_use_stride_kernel"])["FLAGS_use_stride_kernel"] is False
        contiguous = _train_losses(cfg, other, batches, steps=4)
    finally:
        paddle.set_flags({"FLAGS_use_stride_kernel": before})
    np.testing.assert_allclose(contiguous, strided, rtol=1e-5, atol=1e-6)


def test_fast_beam_search_same_ids(tmp_path):
    """generate_ids' beam search (static cross-attention cache left in place, bookkeeping on numpy)
    gives paddlenlp's own ids, including hypotheses that end with eos before the length limit."""
    cfg, model, batches = _tiny_setup(tmp_path)
    _train_losses(cfg, model, batches, steps=6)
    model.eval()
    ids = special_ids(None, model)
    features = [{"input_ids": list(row[row != ids["pad"]]), "labels": [ids["eos"]]} for b in batches[:2] for row in b.arrays["input_ids"]]
    gen_cfg = dict(cfg, num_beams=4, eval_batch_size=8, max_target_length=10, min_target_length=0)
    reference = generate_ids(model, features, gen_cfg, ids)  # inside fast_beam_search
    import paddle
    from paddlenlp.generation.utils import BeamSearchScorer

    assert "reorder_cache" not in vars(model) and BeamSearchScorer.process is not beam_scorer_process  # restored
    assert any(ids["eos"] in list(row) for row in reference)  # hypotheses finished by eos: the branch that adds them ran

    with paddle.no_grad():
        for start in range(0, len(features), 8):
            chunk = features[start:start + 8]
            order = sorted(range(len(chunk)), key=lambda i: -len(chunk[i]["input_ids"]))
            batch = collate([chunk[i] for i in order], pad_id=ids["pad"], decoder_start_id=ids["decoder_start"]).arrays
            out, _ = model.generate(input_ids=paddle.to_tensor(batch["input_ids"]), attention_mask=paddle.to_tensor(batch["attention_mask"]),
                                    max_new_tokens=10, min_length=0, decode_strategy="beam_search", num_beams=4,
                                    decoder_start_token_id=ids["decoder_start"], eos_token_id=ids["eos"], pad_token_id=ids["pad"], use_cache=True)
            for i, row in zip(order, out.numpy()):
                np.testing.assert_array_equal(reference[start + i], row)


@pytest.mark.parametrize("vendor, flags, expected", [
    ("AuthenticAMD", "fpu sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni", "7"),
    ("AuthenticAMD", "fpu sse2 avx avx2 fma", "5"),
    ("AuthenticAMD", "fpu sse2 avx avx512f", None),  # AVX-512 foundation alone is not MKL's Skylake path
    ("GenuineIntel", "fpu sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl", None),  # MKL detects Intel itself
])
def test_mkl_cpu_type(tmp_path, vendor, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: 26\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert mkl_cpu_type(str(cpuinfo)) == expected
    assert mkl_cpu_type(str(tmp_path / "missing")) is None


# ---------------------------------------------------------------------------- patches: copies, versions, the switch
def test_a_deep_copy_of_a_patched_model_is_patched_and_computes_with_its_own_weights():
    """The patches swap each layer's class (not its bound forward), so copy.deepcopy keeps them, on the copy's weights."""
    import paddle
    import paddle.nn.functional as F

    paddle.set_device("cpu")
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Linear(8, 8), paddle.nn.LayerNorm(8))
    use_fast_cpu_kernels(model)
    twin = copy.deepcopy(model)
    assert [type(layer) for layer in twin] == [type(layer) for layer in model]
    assert type(twin[0]).__name__ == "FastLinear" and type(twin[1]).__name__ == "FastLayerNorm"
    with paddle.no_grad():
        twin[0].weight.set_value(paddle.randn([8, 8]))
        twin[1].weight.set_value(twin[1].weight * 3.0)
    x = paddle.randn([4, 8])
    x.stop_gradient = False  # the training path: the PyLayers run
    expected = F.layer_norm(F.linear(x, twin[0].weight, twin[0].bias), 8, twin[1].weight, twin[1].bias, twin[1]._epsilon)
    np.testing.assert_allclose(twin(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    original = F.layer_norm(F.linear(x, model[0].weight, model[0].bias), 8, model[1].weight, model[1].bias, model[1]._epsilon)
    np.testing.assert_allclose(model(x).numpy(), original.numpy(), rtol=1e-5, atol=1e-5)  # the original keeps its own
    assert not np.allclose(model(x).numpy(), twin(x).numpy())


@pytest.mark.parametrize("version, supported", [("2.6.2", True), ("3.3.1", True), ("3.0.0", True), ("2.5.2", False),
                                                 ("3.4.0", False), ("0.0.0", False), ("develop", False)])
def test_patches_know_the_paddle_versions_they_were_written_for(version, supported):
    assert version_supported("paddle", version) is supported


def test_outside_those_versions_paddles_own_layers_and_beam_search_run(monkeypatch, capsys):
    import paddle
    from paddlenlp.generation.utils import BeamSearchScorer

    paddle.set_device("cpu")
    monkeypatch.setitem(WRITTEN_FOR, "paddle", ((9, 0), (9, 9)))
    monkeypatch.setitem(WRITTEN_FOR, "paddlenlp", ((9, 0), (9, 9)))
    monkeypatch.setattr(speedup_versions, "_skipped", set())
    layer = paddle.nn.Linear(4, 4)
    assert sum(use_fast_cpu_kernels(layer).values()) == 0 and type(layer) is paddle.nn.Linear
    original = BeamSearchScorer.process
    with fast_beam_search(layer):
        assert BeamSearchScorer.process is original and "reorder_cache" not in vars(layer)
    out = capsys.readouterr().out
    assert "outside the versions these patches were written for" in out and "using paddle's own code" in out


def test_fast_kernels_false_runs_paddles_own_code(tmp_path):
    """The one switch: with fast_kernels=False no layer is patched and training still learns the same way."""
    from helpers import run_entry, read_jsonl, tiny_bart_arg

    out = tmp_path / "out"
    result = run_entry(["train.py", f"--output_dir={out}", tiny_bart_arg(), "--fast_kernels=False", "--report_to=none",
                        "--max_steps=3", "--save_steps=3", "--max_train_samples=64", "--train_batch_size=16",
                        "--max_eval_samples=4", "--max_source_length=64", "--max_target_length=16"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [3]
