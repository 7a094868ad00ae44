"""Shared by the export tests: tiny paddlenlp models built from config, every parameter random (so a swapped,
untransposed or dropped tensor cannot hide behind zero/one inits), saved with their tokenizer as this project
saves a trained model (model.safetensors, config.json, tokenizer files, label_map.json, train_config.json)."""
import json
import os

import numpy as np

WORDS = "the quick brown fox jumps over lazy dog hello world test this is paddle model ##s ##ing ##ed".split()
# A character vocabulary like the trainers build from Chinese texts, plus English words.
CJK = list(dict.fromkeys("探险家带领队伍抵达了海边北京上海足球联赛新变化"))  # each character once
BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz!.,?") + WORDS + CJK
BPE_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<|endoftext|>"]  # ids 0..5
LABELS = ["体育", "科技", "财经"]
# The summarization run's settings a BART source carries in train_config.json.
RUN_SETTINGS = {"max_source_length": 48, "max_target_length": 7, "min_target_length": 2, "num_beams": 3}


def make_vocab_dir(d):
    """A BERT vocab.txt and a tiny byte-level BPE (vocab.json + merges.txt) in directory d."""
    from tokenizers import ByteLevelBPETokenizer

    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(BERT_VOCAB) + "\n")
    bpe = ByteLevelBPETokenizer()
    corpus = ["Hello world! The quick brown fox jumps over the lazy dog. This is a paddle test."] * 4
    bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=1, special_tokens=BPE_SPECIALS)
    bpe.save_model(str(d))
    return str(d)


def _tokenizer(paddle_class, vocab_dir):
    import paddlenlp.transformers as pnt

    vocab_txt = os.path.join(vocab_dir, "vocab.txt")
    bpe = {"vocab_file": os.path.join(vocab_dir, "vocab.json"), "merges_file": os.path.join(vocab_dir, "merges.txt")}
    if paddle_class.startswith(("Bert", "Ernie")) or paddle_class == "BartForConditionalGeneration:wordpiece":
        return pnt.BertTokenizer(vocab_file=vocab_txt)
    if paddle_class.startswith("Roberta"):
        return pnt.RobertaBPETokenizer(**bpe)
    if paddle_class.startswith("Bart"):
        return pnt.BartTokenizer(**bpe)
    if paddle_class.startswith("GPT"):
        return pnt.GPTTokenizer(**bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    raise ValueError(paddle_class)


def _config(paddle_class, vocab_size, tokenizer):
    import paddlenlp.transformers as pnt

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    labels = dict(id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    head = labels if paddle_class.endswith("ForSequenceClassification") else {}
    if paddle_class.startswith("Bert"):
        return pnt.BertConfig(vocab_size=vocab_size, max_position_embeddings=64, **small, **head)
    if paddle_class.startswith("Ernie"):
        return pnt.ErnieConfig(vocab_size=vocab_size, max_position_embeddings=64, **small, **head)
    if paddle_class.startswith("Roberta"):
        return pnt.RobertaConfig(vocab_size=vocab_size, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1,
                                 cls_token_id=0, layer_norm_eps=1e-5, **small, **head)
    if paddle_class.startswith("GPT"):
        eos = tokenizer.eos_token_id
        return pnt.GPTConfig(vocab_size=vocab_size, max_position_embeddings=64, bos_token_id=eos, eos_token_id=eos,
                             pad_token_id=eos, **small)
    if paddle_class.startswith("Bart"):
        ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                   eos_token_id=tokenizer.sep_token_id, decoder_start_token_id=tokenizer.cls_token_id,
                   forced_eos_token_id=tokenizer.sep_token_id)  # as train.py builds its BART
        return pnt.BartConfig(vocab_size=vocab_size, d_model=32, encoder_layers=2, decoder_layers=2,
                              encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37,
                              decoder_ffn_dim=37, max_position_embeddings=64, dropout=0.0, **ids)
    raise ValueError(paddle_class)


def randomize(model, seed=0, tie_bart_head=False):
    """Every parameter and BART's final_logits_bias random; norm scales around 1."""
    rng = np.random.RandomState(seed)
    state = model.state_dict()
    values, by_tensor = {}, {}
    for name, tensor in state.items():
        if "int" in str(tensor.dtype) or "bool" in str(tensor.dtype):
            continue
        shape = tuple(tensor.shape)
        if id(tensor) in by_tensor:  # one parameter under several names (BART's shared embedding)
            values[name] = by_tensor[id(tensor)]
        elif len(shape) == 1 and name.endswith("weight"):
            values[name] = (0.5 + rng.rand(*shape)).astype("float32")
        else:
            values[name] = (0.3 * rng.randn(*shape)).astype("float32")
        by_tensor[id(tensor)] = values[name]
    if tie_bart_head:
        values["lm_head_weight"] = values["bart.shared.weight"]
    model.set_state_dict(values)
    return model


def make_paddle_dir(path, paddle_class, vocab_dir, seed=0, wordpiece=False, tie_bart_head=False):
    """A saved tiny model (safetensors), its tokenizer and what the trainers save beside them."""
    import paddle
    import paddlenlp.transformers as pnt

    paddle.set_device("cpu")
    tokenizer = _tokenizer(paddle_class + (":wordpiece" if wordpiece else ""), vocab_dir)
    vocab_size = len(tokenizer.get_vocab())
    model = getattr(pnt, paddle_class)(_config(paddle_class, vocab_size, tokenizer))
    randomize(model, seed, tie_bart_head=tie_bart_head)
    model.eval()
    os.makedirs(path, exist_ok=True)
    if paddle_class == "BartForConditionalGeneration":
        from paddle_finetune.tasks.summarization import PREDICTION_DEFAULTS, record_generation_settings, special_ids

        cfg = {**PREDICTION_DEFAULTS, **RUN_SETTINGS}
        record_generation_settings(model, cfg, special_ids(tokenizer, model))
        _write_json(os.path.join(path, "train_config.json"), RUN_SETTINGS)
    if paddle_class.endswith("ForSequenceClassification"):
        _write_json(os.path.join(path, "train_config.json"), {"max_seq_length": 48, "text_pair_column": None})
        _write_json(os.path.join(path, "label_map.json"), {"id2label": {str(i): n for i, n in enumerate(LABELS)},
                                                           "label2id": {n: i for i, n in enumerate(LABELS)}})
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return str(path), model, tokenizer


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
