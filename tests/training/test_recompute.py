"""training.recompute (recompute=True): the same losses and weights as without it, dropout included, with the
compiled CPU kernels and with paddle's own layers; evaluation untouched; every trainer takes the key."""
import copy
import os
import re

import numpy as np
import pytest

import train
from helpers import ROOT, read_jsonl, run_entry, tiny_bart_arg
from paddle_finetune.data.batching import epoch_batches, to_tensors
from paddle_finetune.runtime.rng import set_seed
from paddle_finetune.speedups.layers import use_fast_cpu_kernels
from paddle_finetune.tasks.summarization import collate, load_split, seq2seq_loss, special_ids, tokenize_examples
from paddle_finetune.training.optimization import build_optimizer
from paddle_finetune.training.recompute import use_recompute


def _tiny_bart(tmp_path):
    import paddle
    from paddlenlp.transformers import BartConfig, BartForConditionalGeneration, BertTokenizer

    from paddle_finetune.data.text import write_char_vocab

    paddle.set_device("cpu")
    cfg = dict(train.CONFIG, max_source_length=48, max_target_length=12, learning_rate=3e-3, warmup_steps=1)
    rows = load_split(cfg, os.path.join(ROOT, "datasets", "sample_summarization", "train.jsonl"), "train")[:32]
    tok = BertTokenizer(vocab_file=write_char_vocab((t for r in rows for t in (r["source"], r["target"])), str(tmp_path / "v.txt")))
    paddle.seed(3)
    model = BartForConditionalGeneration(BartConfig(
        vocab_size=len(tok.vocab), d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, dropout=0.1,
        attention_dropout=0.1, activation_dropout=0.1, pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id, decoder_start_token_id=tok.cls_token_id, forced_eos_token_id=tok.sep_token_id))
    ids = special_ids(tok, model)
    feats = tokenize_examples(rows, tok, cfg, ids["eos"])
    lengths = [len(f["input_ids"]) + len(f["labels"]) for f in feats]
    batches = [collate([feats[i] for i in b], pad_id=ids["pad"], decoder_start_id=ids["decoder_start"]).arrays
               for b in epoch_batches(lengths, 8, 1, 0, 42, 0, True)]
    return cfg, model, batches


def _train(cfg, model, batches):
    optimizer, scheduler = build_optimizer(model, cfg, len(batches))
    set_seed(11)
    model.train()
    losses = []
    for batch in batches:
        loss = seq2seq_loss(model, to_tensors(batch))
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        scheduler.step()
        losses.append(float(loss))
    return losses, {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("fast", [True, False], ids=["compiled-kernels", "paddle-layers"])
def test_recompute_gives_the_same_losses_and_weights_with_dropout(tmp_path, fast):
    cfg, model, batches = _tiny_bart(tmp_path)
    plain, checkpointed = model, copy.deepcopy(model)
    if fast:
        use_fast_cpu_kernels(plain)
        use_fast_cpu_kernels(checkpointed)
    assert use_recompute(checkpointed) == 4  # 2 encoder + 2 decoder layers
    losses, weights = _train(cfg, plain, batches)
    losses_rc, weights_rc = _train(cfg, checkpointed, batches)
    assert losses_rc == pytest.approx(losses, rel=1e-6, abs=1e-7)
    assert len(set(losses)) == len(losses) and losses[-1] < losses[0]  # it trained, with dropout on
    for name, value in weights.items():
        np.testing.assert_allclose(weights_rc[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_recompute_leaves_evaluation_and_generation_alone(tmp_path):
    import paddle

    cfg, model, batches = _tiny_bart(tmp_path)
    checkpointed = copy.deepcopy(model)
    use_recompute(checkpointed)
    model.eval()
    checkpointed.eval()
    batch = to_tensors(batches[0])
    with paddle.no_grad():
        assert float(seq2seq_loss(model, batch)) == float(seq2seq_loss(checkpointed, batch))
    out = model.generate(input_ids=batch["input_ids"], max_length=5, decode_strategy="greedy_search")[0].numpy()
    out_rc = checkpointed.generate(input_ids=batch["input_ids"], max_length=5, decode_strategy="greedy_search")[0].numpy()
    np.testing.assert_array_equal(out, out_rc)


@pytest.mark.parametrize("script, extra", [
    ("train.py", [tiny_bart_arg(), "--max_source_length=64", "--max_target_length=16"]),
    ("train_classification.py", ["--model_config={'hidden_size': 32, 'num_hidden_layers': 2, 'num_attention_heads': 2, "
                                 "'intermediate_size': 64}"]),
    ("train_mlm.py", ["--model_config={'hidden_size': 32, 'num_hidden_layers': 2, 'num_attention_heads': 2, 'intermediate_size': 64}"]),
    ("train_clm.py", ["--model_config={'hidden_size': 32, 'num_hidden_layers': 2, 'num_attention_heads': 2, 'intermediate_size': 64}"]),
])
def test_every_trainer_takes_recompute(tmp_path, script, extra):
    out = tmp_path / "out"
    result = run_entry([script, f"--output_dir={out}", "--recompute=True", "--max_steps=2", "--save_steps=2", "--report_to=none",
                        "--device=cpu", *extra])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    blocks = re.search(r"recompute: (\d+) transformer blocks recompute their activations", result.stdout)
    assert blocks and int(blocks.group(1)) >= 2, result.stdout[-2000:]
    losses = [r["loss"] for r in read_jsonl(os.path.join(out, "train_log.jsonl"))]
    assert losses and all(np.isfinite(losses))
