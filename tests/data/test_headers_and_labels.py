"""Issue #22, labels as written: a header row is detected (or declared with has_header=auto|True|False) and never
becomes a row or a class; index columns select columns of a headered file; a first row that looks like a header but
is read as a row gets a warning naming it; labels that all read as numbers are compared as numbers (1 and 1.0 one
class); the log lists the classes with their counts. Rules as properties, the reported cases through
train_classification's real entry point on a tiny model."""
import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from paddle_finetune.configuration.parse import normalise_has_header
from paddle_finetune.data.examples import read_examples
from paddle_finetune.data.readers import KNOWN_COLUMN_NAMES, header_evidence, is_number_text
from paddle_finetune.errors import ConfigError, DataError
from paddle_finetune.tasks.classification import describe_labels, label_names_from, number_label, numeric_labels

TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
             "max_position_embeddings": 128}
TEXTS = [f"关于{'比赛' if i % 2 else '股票'}的第{i}条新闻" for i in range(16)]
CJK = st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5), min_size=2, max_size=20)


def write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def notes_of(path, columns, has_header="auto"):
    notes = []
    rows = read_examples(path, columns, log=notes.append, has_header=has_header)
    return rows, notes


# ---------------------------------------------------------------------------- header detection
def test_the_reported_case_a_tsv_header_with_index_columns_is_not_a_row(tmp_path):
    path = write(tmp_path, "a.tsv", ["text\tlabel", *(f"{t}\t{i % 2}" for i, t in enumerate(TEXTS))])
    rows, notes = notes_of(path, {"text": 0, "label": 1})
    assert len(rows) == len(TEXTS) and {r["label"] for r in rows} == {"0", "1"}
    assert notes == [f"{path}: line 1 read as a header (known column name(s) 'text', 'label'); set has_header=False if it is a row"]


def test_a_word_above_a_column_of_numbers_is_a_header(tmp_path):
    path = write(tmp_path, "a.csv", ["评论,情感", *(f"{t},{i % 3}" for i, t in enumerate(TEXTS))])
    rows, notes = notes_of(path, {"text": 0, "label": 1})
    assert len(rows) == len(TEXTS) and "'情感' stands above a column of numbers" in notes[0]


def test_declared_has_header_wins_and_a_header_read_as_a_row_is_warned_about(tmp_path):
    headered = write(tmp_path, "h.tsv", ["text\tlabel", *(f"{t}\tx" for t in TEXTS)])
    rows, notes = notes_of(headered, {"text": 0, "label": 1}, has_header=False)
    assert rows[0] == {"text": "text", "label": "label"} and len(rows) == len(TEXTS) + 1  # as declared
    assert notes == [(f"WARNING: {headered}:1: the first row looks like a header (known column name(s) 'text', 'label') "
                      "but has_header=False reads it as a row; set has_header=True (or auto) if it is one")]
    headerless = write(tmp_path, "n.tsv", [f"{t}\t{i % 2}" for i, t in enumerate(TEXTS)])
    rows, _ = notes_of(headerless, {"text": 0, "label": 1}, has_header=True)
    assert len(rows) == len(TEXTS) - 1  # the first row is the header the user declared
    with pytest.raises(DataError, match=r"column 'text' is a name, but has_header=False"):
        read_examples(headered, {"text": "text", "label": 1}, has_header=False)
    as_json = tmp_path / "rows.jsonl"  # has_header is about CSV/TSV: JSON rows keep their names
    as_json.write_text("".join(json.dumps({"text": t, "label": "x"}, ensure_ascii=False) + "\n" for t in TEXTS), encoding="utf-8")
    assert len(read_examples(str(as_json), {"text": "text", "label": "label"}, has_header=False)) == len(TEXTS)


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(CJK, min_size=1, max_size=30), labels=st.lists(st.integers(0, 20), min_size=30, max_size=30),
       delimiter=st.sampled_from(["\t", ","]))
def test_a_headerless_file_of_texts_and_number_labels_keeps_its_first_row(tmp_path_factory, texts, labels, delimiter):
    assume(all(t.casefold() not in KNOWN_COLUMN_NAMES for t in texts))
    path = write(tmp_path_factory.mktemp("n"), "a.tsv" if delimiter == "\t" else "a.csv",
                 [f"{t}{delimiter}{y}" for t, y in zip(texts, labels)])
    rows, notes = notes_of(path, {"text": 0, "label": 1})
    assert [r["text"] for r in rows] == texts and not notes


@settings(max_examples=150, deadline=None)
@given(names=st.lists(st.sampled_from(sorted(KNOWN_COLUMN_NAMES)), min_size=2, max_size=2, unique=True),
       texts=st.lists(CJK, min_size=1, max_size=20))
def test_a_header_of_known_names_is_never_a_row_whatever_the_rows(tmp_path_factory, names, texts):
    path = write(tmp_path_factory.mktemp("h"), "a.tsv", ["\t".join(names), *(f"{t}\t{t[::-1]}" for t in texts)])
    rows, _ = notes_of(path, {"text": 0, "label": 1})
    assert [r["text"] for r in rows] == texts


def test_header_evidence_and_the_config_value():
    assert header_evidence(["content", "title"], []) == "known column name(s) 'content', 'title'"
    assert header_evidence(["北京", "3"], [["上海", "4"]]) is None  # numbers under a number: a row
    assert header_evidence(["北京", "上海"], [["天津", "广州"]]) is None
    assert [normalise_has_header(v) for v in ("auto", "AUTO", " true ", False, True)] == ["auto", "auto", True, False, True]
    with pytest.raises(ConfigError, match=r"'has_header' \(from --has_header\) must be 'auto', True or False, got 'yes'"):
        normalise_has_header("yes", "--has_header")


# ---------------------------------------------------------------------------- numbers as labels
SPELLINGS = st.sampled_from(["{}", "{}.0", "{}.00", "0{}", "{}e0", " {} "])


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(-5, 30), min_size=1, max_size=40), spellings=st.lists(SPELLINGS, min_size=40, max_size=40))
def test_labels_that_are_all_numbers_are_one_class_per_number(values, spellings):
    rows = [{"label": spelling.format(v) if v >= 0 or not spelling.startswith("0") else str(v)}
            for v, spelling in zip(values, spellings)]
    rows = [{"label": r["label"].strip()} for r in rows]  # what the reader keeps of " 3 "
    numeric_labels(rows, "f", log=lambda line: None)
    assert label_names_from(rows) == [str(v) for v in sorted(set(values))]


def test_mixed_labels_stay_as_written_and_numbers_spell_one_way():
    rows = [{"label": x} for x in ["1", "1.0", "pos"]]
    assert numeric_labels(rows, "f", log=lambda line: None) == [{"label": "1"}, {"label": "1.0"}, {"label": "pos"}]
    assert [number_label(x) for x in ["1.0", "01", "1e0", "-0", "0.50", "2.5e-1"]] == ["1", "1", "1", "0", "0.5", "0.25"]
    assert not any(is_number_text(x) for x in ["nan", "inf", "1_000", "", "1.2.3", "0x10"])
    rows = [{"label": x} for x in ["3", "1", "10", "1", "3"]]
    assert describe_labels(rows, label_names_from(rows)) == "labels (3), training rows each: 1 (2), 3 (2), 10 (1)"


# ---------------------------------------------------------------------------- through the real entry point
def run_classification(tmp_path, capsys, *args):
    """train_classification.py's cli on a tiny model for one step: (stdout, label names it saved)."""
    import train_classification

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        train_classification.cli([f"--output_dir={out}", f"--model_config={TINY_BERT!r}", "--device=cpu", "--report_to=none",
                                  "--max_steps=1", "--save_steps=1", "--train_batch_size=4", "--eval_batch_size=8", *args])
    printed = capsys.readouterr()
    assert e.value.code == 0, printed.err[-2000:]
    with open(out / "label_map.json", encoding="utf-8") as f:
        id2label = json.load(f)["id2label"]
    return printed.out, [id2label[str(i)] for i in range(len(id2label))]


def test_e2e_a_headered_tsv_with_index_columns_trains_without_a_label_class(tmp_path, capsys):
    path = write(tmp_path, "train.tsv", ["text\tlabel", *(f"{t}\t{'体育' if i % 2 else '财经'}" for i, t in enumerate(TEXTS))])
    out, labels = run_classification(tmp_path, capsys, f"--train_file={path}", "--text_column=0", "--label_column=1")
    assert labels == ["体育", "财经"]
    assert f"{path}: line 1 read as a header (known column name(s) 'text', 'label')" in out
    assert f"data: train {len(TEXTS)} rows" in out
    assert "labels (2), training rows each: 体育 (8), 财经 (8)" in out


def test_e2e_has_header_false_on_a_headered_file_warns_naming_the_row(tmp_path, capsys):
    path = write(tmp_path, "train.tsv", ["text\tlabel", *(f"{t}\t{'体育' if i % 2 else '财经'}" for i, t in enumerate(TEXTS))])
    out, labels = run_classification(tmp_path, capsys, f"--train_file={path}", "--text_column=0", "--label_column=1",
                                     "--has_header=False")
    assert f"WARNING: {path}:1: the first row looks like a header" in out
    assert labels == ["label", "体育", "财经"]  # as declared: the user said the first row is a row


def test_e2e_pandas_floats_among_int_labels_are_one_class(tmp_path, capsys):
    """Labels 0..3 where some rows of class 1 read 1.0 (pandas' int column with missing values): 4 classes."""
    labels = ["0", "1", "2", "3", "1.0", "1.0", "2", "0"] * 2
    path = write(tmp_path, "train.csv", ["text,label", *(f"{t},{y}" for t, y in zip(TEXTS, labels))])
    out, names = run_classification(tmp_path, capsys, f"--train_file={path}")
    assert names == ["0", "1", "2", "3"]
    assert f"{path}: every label reads as a number, so labels are compared as numbers: '1.0' -> '1' (4)" in out
    assert "labels (4), training rows each: 0 (4), 1 (6), 2 (4), 3 (2)" in out
