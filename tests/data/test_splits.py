"""data_utils: every supported layout reads to the same examples; vocab writing."""
import json

import pytest
from paddle_finetune.data.examples import normalize_column, read_examples
from paddle_finetune.data.splits import truncate
from paddle_finetune.data.text import write_char_vocab


ROWS = [("北京发布新规，市民关注。", "北京新规"), ('He said "hi, there".', "greeting"), ("第三条", "三")]
EXPECTED = [{"source": s, "target": t} for s, t in ROWS]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def files(tmp_path):
    objs = [{"id": i, "text": s, "summary": t} for i, (s, t) in enumerate(ROWS)]
    return {
        "json_list": write(tmp_path / "a.json", json.dumps(objs, ensure_ascii=False)),
        "json_data": write(tmp_path / "b.json", json.dumps({"data": objs}, ensure_ascii=False)),
        "json_lines": write(tmp_path / "c.json", "\n".join(json.dumps(o, ensure_ascii=False) for o in objs)),
        "jsonl": write(tmp_path / "d.jsonl", "\n".join(json.dumps(o, ensure_ascii=False) for o in objs) + "\n\n"),
        "csv_header": write(tmp_path / "e.csv", "id,text,summary\n" + "".join(
            f'{i},"{s.replace(chr(34), chr(34) * 2)}",{t}\n' for i, (s, t) in enumerate(ROWS))),
        "tsv_header": write(tmp_path / "f.tsv", "id\ttext\tsummary\n" + "".join(f"{i}\t{s}\t{t}\n" for i, (s, t) in enumerate(ROWS))),
    }


@pytest.mark.parametrize("kind", ["json_list", "json_data", "json_lines", "jsonl", "csv_header", "tsv_header"])
def test_named_columns_in_every_format(files, kind):
    assert read_examples(files[kind], {"source": "text", "target": "summary"}) == EXPECTED


def test_headerless_tsv_and_csv_by_index(tmp_path):
    tsv = write(tmp_path / "g.tsv", "".join(f"to title\t{s}\t{t}\n" for s, t in ROWS))
    assert read_examples(tsv, {"source": 1, "target": "2"}) == EXPECTED  # "2" from a CLI means index 2
    csv_path = write(tmp_path / "h.csv", "".join(f'"{s.replace(chr(34), chr(34) * 2)}",{t}\n' for s, t in ROWS))
    assert read_examples(csv_path, {"source": 0, "target": 1}) == EXPECTED


def test_txt_lines_and_utf8_bom(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeff第一行\n\n第二行\n".encode("utf-8"))
    assert read_examples(str(path), {"text": 0}) == [{"text": "第一行"}, {"text": "第二行"}]


def test_json_objects_by_index_follow_key_order(files):
    assert read_examples(files["jsonl"], {"source": 1, "target": 2}) == EXPECTED


def test_normalize_column_and_truncate():
    assert normalize_column("3") == 3 and normalize_column("text") == "text" and normalize_column(2) == 2
    assert truncate([1, 2, 3], 2) == [1, 2] and truncate([1, 2, 3], 0) == [1, 2, 3]


def test_char_vocab_covers_data_and_spells_latin(tmp_path):
    from paddlenlp.transformers import BertTokenizer

    path = write_char_vocab(["北京发布新规", "Paddle 2.6"], str(tmp_path / "vocab.txt"))
    vocab = open(path, encoding="utf-8").read().split("\n")
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = BertTokenizer(vocab_file=path)
    ids = tok("北京 paddlenlp", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids  # unseen Latin words are spelt with ##letters, not [UNK]
