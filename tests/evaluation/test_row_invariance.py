"""The fact row-balanced evaluation shards rest on (evaluation.sharding): a row's outputs are the same bits whichever
rows share its batch, as long as the batch is padded to its unit's length. Each trainer's per-row prediction is
run on whole units and on random contiguous cuts of them (what deal_rows hands the ranks), on tiny models built
from a config with random weights (flat logits: the smallest difference would flip a token or a probability)."""
import zlib  # noqa: F401 - before paddle (paddle 2.6 exports its own zlib)

import numpy as np
import pytest

from paddle_finetune.data.text import write_char_vocab
from paddle_finetune.runtime.environment import setup_device

CUTS_PER_UNIT = 6


@pytest.fixture(scope="module", autouse=True)
def cpu():
    setup_device("cpu")  # the engine's CPU setup (MKL_CBWR, threads), as a run has it


def random_cuts(rng, n):
    """Contiguous pieces covering range(n), cut at random points (a unit shared between ranks)."""
    points = sorted(rng.choice(np.arange(1, n), size=rng.randint(0, min(n - 1, 3) + 1), replace=False)) if n > 1 else []
    bounds = [0, *points, n]
    return [list(range(a, b)) for a, b in zip(bounds, bounds[1:])]


def assert_cuts_match_the_whole(predict, unit_rows, seed):
    """predict(rows) -> per-row outputs; every cut gives each row exactly the whole unit's output."""
    whole = predict(list(range(unit_rows)))
    rng = np.random.RandomState(seed)
    for _ in range(CUTS_PER_UNIT):
        pieces = [out for rows in random_cuts(rng, unit_rows) for out in predict(rows)]
        assert pieces == whole


def lengths(rng, n, low, high):
    return [int(v) for v in rng.randint(low, high, size=n)]


def test_classification_probabilities_and_losses_do_not_depend_on_the_batch():
    import paddle
    from paddlenlp.transformers import BertConfig, BertForSequenceClassification

    from paddle_finetune.tasks.classification import eval_rows

    paddle.seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                     intermediate_size=64, num_labels=4, hidden_dropout_prob=0.0))
    model.eval()
    rng = np.random.RandomState(0)
    features = [{"input_ids": list(rng.randint(5, 120, n)), "token_type_ids": [0] * n, "label": int(rng.randint(4))}
                for n in lengths(rng, 20, 3, 40)]
    pad_to = max(len(f["input_ids"]) for f in features)
    assert_cuts_match_the_whole(lambda rows: eval_rows(model, [features[i] for i in rows], 0, pad_to), len(features), 1)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_summaries_and_their_losses_do_not_depend_on_the_batch(tmp_path, num_beams):
    import paddle
    from paddlenlp.transformers import BartConfig, BartForConditionalGeneration, BertTokenizer

    from paddle_finetune.tasks.summarization import predict_rows, unit_lengths

    tokenizer = BertTokenizer(vocab_file=write_char_vocab(["北京发布新规定今天天气很好"], str(tmp_path / "vocab.txt")))
    paddle.seed(0)
    model = BartForConditionalGeneration(BartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128, dropout=0.0,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.cls_token_id, forced_eos_token_id=tokenizer.sep_token_id))
    model.eval()
    ids = {"pad": tokenizer.pad_token_id, "eos": tokenizer.sep_token_id, "decoder_start": tokenizer.cls_token_id}
    cfg = {"max_target_length": 10, "min_target_length": 0, "num_beams": num_beams, "fast_kernels": True}
    rng = np.random.RandomState(2)
    vocab = len(tokenizer)
    features = [{"input_ids": list(rng.randint(5, vocab, n)), "labels": list(rng.randint(5, vocab, m)) + [ids["eos"]]}
                for n, m in zip(lengths(rng, 10, 4, 40), lengths(rng, 10, 0, 9))]
    with_loss = [bool(rng.randint(4)) for _ in features]  # some rows without a reference: no loss for them
    pad_to = unit_lengths(features)
    assert_cuts_match_the_whole(
        lambda rows: predict_rows(model, tokenizer, [features[i] for i in rows], cfg, ids, pad_to, [with_loss[i] for i in rows]),
        len(features), 3)


def test_masked_lm_losses_do_not_depend_on_the_batch():
    import paddle
    from paddlenlp.transformers import BertConfig, BertForMaskedLM

    from paddle_finetune.tasks.masked_lm import collate, fixed_eval_batches, unit_row_losses

    paddle.seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, hidden_dropout_prob=0.0))
    model.eval()
    rng = np.random.RandomState(4)
    features = [{"input_ids": [2] + list(rng.randint(5, 120, n)) + [3], "word_ids": [-1] + list(range(n)) + [-1]}
                for n in lengths(rng, 16, 2, 30)]
    def collate_fn(f, r):
        return collate(f, r, pad_id=0, mask_id=4, random_ids=np.arange(5, 120), mlm_probability=0.3)

    batch = fixed_eval_batches(features, 16, 42, collate_fn)[0]
    unit = list(range(16))
    assert_cuts_match_the_whole(lambda rows: unit_row_losses(model, batch, unit, rows), 16, 5)
    # the masks are drawn per row: another eval_batch_size scores the same masked tokens, row for row
    smaller = fixed_eval_batches(features, 5, 42, collate_fn)
    for key in ("input_ids", "labels"):
        rows = [row[row != (0 if key == "input_ids" else -100)].tolist() for b in smaller for row in b.arrays[key]]
        assert rows == [row[row != (0 if key == "input_ids" else -100)].tolist() for row in batch.arrays[key]]


def test_causal_lm_losses_do_not_depend_on_the_batch():
    import paddle
    from paddlenlp.transformers import GPTConfig, GPTForCausalLM

    from paddle_finetune.tasks.causal_lm import row_losses

    paddle.seed(0)
    model = GPTForCausalLM(GPTConfig(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0))
    model.eval()
    rng = np.random.RandomState(6)
    features = [{"input_ids": list(rng.randint(5, 120, n))} for n in [24] * 11 + [9]]  # a short last block, padded
    assert_cuts_match_the_whole(lambda rows: row_losses(model, [features[i] for i in rows], 0, 24), len(features), 7)
