"""data_utils loader rules: whole-file CSV/TSV records with field counts, the TSV quote dialect,
unique header names and JSON keys, no negative column indexes, real JSON error lines, values
that are not text. Each case names file:line (and column where known)."""
import csv
import glob
import json
import os

from paddle_finetune.paths import PROJECT_ROOT
import pytest
from paddle_finetune.data.examples import normalize_column, read_examples
from paddle_finetune.data.readers import iter_rows
from paddle_finetune.data.splits import load_texts
from paddle_finetune.errors import DataError


ROOT = PROJECT_ROOT
CSL = os.path.join(ROOT, "..", "shared", "data", "csl")
SUM = {"source": "content", "target": "title"}


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


def skipped_log(path, columns, **kwargs):
    logs = []
    rows = read_examples(path, columns, skip_bad_rows=True, log=logs.append, **kwargs)
    return rows, logs


# ---------------------------------------------------------------- CSV records
def test_csv_quoted_newline_is_one_row_named_by_its_first_line(tmp_path):
    path = write(tmp_path, "a.csv", 'content,title\n"first line\nsecond line",t1\nc2,t2\n"x",\n')
    with pytest.raises(DataError, match=rf"^{path}:5: empty target \(column 'title'\)$"):
        read_examples(path, SUM)
    rows, logs = skipped_log(path, SUM)
    assert rows == [{"source": "first line\nsecond line", "target": "t1"}, {"source": "c2", "target": "t2"}]
    assert logs == [f"skip_bad_rows: skipped 1 bad row(s) in {path}; first: {path}:5: empty target (column 'title')"]


def test_csv_field_over_131072_characters(tmp_path):
    long = "长" * 200_000
    path = write(tmp_path, "a.csv", f'content,title\n"{long}",t\n')
    assert read_examples(path, SUM) == [{"source": long, "target": "t"}]
    assert csv.field_size_limit() >= 200_000


@pytest.mark.parametrize("line,count", [("a,b,c", 3), ("a", 1)])
def test_csv_row_with_too_many_or_too_few_fields_is_bad(tmp_path, line, count):
    path = write(tmp_path, "a.csv", f"content,title\nc1,t1\n{line}\nc3,t3\n")
    with pytest.raises(DataError, match=rf"^{path}:3: {count} fields, but the header \(line 1\) has 2"):
        read_examples(path, SUM)
    rows, logs = skipped_log(path, SUM)
    assert [r["source"] for r in rows] == ["c1", "c3"] and "skipped 1 bad row(s)" in logs[0]


def test_headerless_rows_must_match_the_first_rows_field_count(tmp_path):
    path = write(tmp_path, "a.csv", "c1,t1\nc2,t2,extra\n")
    with pytest.raises(DataError, match=rf"^{path}:2: 3 fields, but the first row \(line 1\) has 2"):
        read_examples(path, {"source": 0, "target": 1})


def test_malformed_csv_quote_is_a_bad_row_not_a_silent_merge(tmp_path):
    path = write(tmp_path, "a.csv", 'content,title\n"c1"x,t1\nc2,t2\n"never closed,t3\n')
    with pytest.raises(DataError, match=rf"^{path}:2: malformed CSV"):
        read_examples(path, SUM)
    rows, logs = skipped_log(path, SUM)
    assert rows == [{"source": "c2", "target": "t2"}] and f"skipped 2 bad row(s) in {path}; first: {path}:2:" in logs[0]


# ---------------------------------------------------------------- TSV records
def test_tsv_extra_tab_is_a_bad_row_not_a_new_class(tmp_path):
    path = write(tmp_path, "a.tsv", "text\tlabel\n好\t1\n差\t0\textra\n还行\t1\n")
    columns = {"text": "text", "label": "label"}
    with pytest.raises(DataError, match=rf"^{path}:3: 3 fields, but the header \(line 1\) has 2"):
        read_examples(path, columns)
    rows, _ = skipped_log(path, columns)
    assert {r["label"] for r in rows} == {"1"}


def test_tsv_quotes_inside_text_stay_text(tmp_path):
    rows = ['"引号"开头的标题与"另一对"引号', '标题里有"甲""乙"相连', 'ends with a quote"', '"unclosed', '""x']
    path = write(tmp_path, "a.tsv", "".join(f"to title\t{r}\tT{i}\n" for i, r in enumerate(rows)))
    assert [row[1] for _, row in iter_rows(path, has_header=False)] == rows


def test_tsv_properly_quoted_field_may_hold_tabs_newlines_and_quotes(tmp_path):
    path = write(tmp_path, "a.tsv", 'id\ttext\tlabel\n1\t"two\nlines"\tA\n2\t"a ""tab""\there"\tB\n3\t""\tC\n4\tplain\tD\n')
    got = [(line, row) for line, row in iter_rows(path, has_header=True)]
    assert got == [(2, {"id": "1", "text": "two\nlines", "label": "A"}),
                   (4, {"id": "2", "text": 'a "tab"\there', "label": "B"}),
                   (5, {"id": "3", "text": "", "label": "C"}),
                   (6, {"id": "4", "text": "plain", "label": "D"})]


def test_tsv_stray_quote_that_would_merge_rows_is_refused(tmp_path):
    # line 1 opens a quote it never closes; line 2's field ends with one: read as one quoted
    # field, two rows would become one row with the right number of fields.
    path = write(tmp_path, "a.tsv", 'to title\t"stray quote\tT1\nto title\tends with quote"\tT2\nto title\tok\tT3\n')
    with pytest.raises(DataError, match=rf"^{path}:1: a quoted field opens on line 1 and closes on line 2"):
        read_examples(path, {"source": 1, "target": 2})
    rows, logs = skipped_log(path, {"source": 1, "target": 2})
    assert rows == [{"source": "ok", "target": "T3"}] and "skipped 1 bad row(s)" in logs[0]


@pytest.mark.skipif(not os.path.isdir(CSL), reason="../shared/data/csl is not here")
@pytest.mark.parametrize("name", sorted(os.path.basename(p) for p in glob.glob(os.path.join(CSL, "*.tsv"))) or ["none"])
def test_real_csl_tsv_rows_are_exactly_the_tab_split_fields(name):
    path = os.path.join(CSL, name)
    with open(path, encoding="utf-8") as f:
        expected = [(n, line.rstrip("\n").split("\t")) for n, line in enumerate(f, start=1) if line.strip()]
    got = list(iter_rows(path, has_header=False))
    assert got == expected
    assert any('"' in field for _, fields in expected for field in fields)  # the file does hold quotes


# ---------------------------------------------------------------- headers and columns
@pytest.mark.parametrize("name,header", [("a.csv", "content,title,title"), ("a.tsv", "content\ttitle\t title ")])
def test_duplicate_header_names_are_refused(tmp_path, name, header):
    sep = "," if name.endswith(".csv") else "\t"
    path = write(tmp_path, name, f"{header}\n" + sep.join(["c", "t1", "t2"]) + "\n")
    with pytest.raises(DataError, match=rf"^{path}:1: duplicate column name 'title' in the header"):
        read_examples(path, SUM, skip_bad_rows=True)  # not a row: skipping cannot help


def test_duplicate_json_keys_are_a_bad_row(tmp_path):
    path = write(tmp_path, "a.jsonl", '{"content": "c1", "title": "t1", "title": "t2"}\n{"content": "c2", "title": "t"}\n')
    with pytest.raises(DataError, match=rf"^{path}:1: duplicate key\(s\) \['title'\]"):
        read_examples(path, SUM)
    assert skipped_log(path, SUM)[0] == [{"source": "c2", "target": "t"}]


@pytest.mark.parametrize("column", [-1, "-1", -9, "-9"])
def test_negative_column_indexes_are_refused(tmp_path, column):
    path = write(tmp_path, "a.tsv", "a\tb\n")
    with pytest.raises(DataError, match=rf"^column {column!r} for source: negative column indexes are not supported"):
        read_examples(path, {"source": column, "target": 0})


@pytest.mark.parametrize("column", [True, 1.0, None])
def test_columns_that_are_neither_names_nor_indexes_are_refused(tmp_path, column):
    path = write(tmp_path, "a.tsv", "a\tb\n")
    with pytest.raises(DataError, match="give a column name or a 0-based column index"):
        read_examples(path, {"source": column})


def test_normalize_column_reads_only_ascii_digits():
    assert normalize_column(" 2 ") == 2 and normalize_column("-1") == -1 and normalize_column("²") == "²"


# ---------------------------------------------------------------- JSON
def pretty_rows(n=20):
    return json.dumps([{"content": f"c{i}", "title": f"t{i}"} for i in range(n)], indent=2).split("\n")


def test_pretty_printed_json_error_names_its_real_line_and_column(tmp_path):
    lines = pretty_rows()
    assert lines[42] == '    "content": "c10",'
    lines[42] = lines[42].rstrip(",")  # line 43 loses its comma; the parser notices on line 44
    path = write(tmp_path, "a.json", "\n".join(lines))
    with pytest.raises(DataError, match=rf"^{path}:44: malformed JSON \(Expecting ',' delimiter at column 5\)$"):
        read_examples(path, SUM, skip_bad_rows=True)  # a broken document has no rows to keep


def test_pretty_printed_data_wrapper_error_line(tmp_path):
    path = write(tmp_path, "a.json", '{\n  "data": [\n    {"content": "c", "title": "t"},\n    {"content": "c" "title": "t"}\n  ]\n}\n')
    with pytest.raises(DataError, match=rf"^{path}:4: malformed JSON \(Expecting ',' delimiter at column 21\)$"):
        read_examples(path, SUM)


def test_json_lines_in_a_json_file_keep_per_line_errors(tmp_path):
    good = [json.dumps({"content": f"c{i}", "title": f"t{i}"}) for i in range(4)]
    for broken_line in (1, 3):
        lines = list(good)
        lines[broken_line - 1] = '{"content": "oops", "title": '
        path = write(tmp_path, f"l{broken_line}.json", "\n".join(lines) + "\n")
        with pytest.raises(DataError, match=rf"^{path}:{broken_line}: malformed JSON \(Expecting value at column 30\)$"):
            read_examples(path, SUM)
        assert len(skipped_log(path, SUM)[0]) == 3


def test_json_document_rows_are_named_by_item_and_first_line(tmp_path):
    rows = [{"content": "c1", "title": "t1"}, {"content": "c2", "title": ""}]
    path = write(tmp_path, "a.json", json.dumps({"version": 1, "data": rows}, indent=2))
    assert [where for where, _ in iter_rows(path, has_header=True)] == ["4 (item 1)", "8 (item 2)"]
    with pytest.raises(DataError, match=rf"^{path}:8 \(item 2\): empty target \(column 'title'\)$"):
        read_examples(path, SUM)


def test_non_utf8_byte_inside_a_json_document_makes_only_its_item_bad(tmp_path):
    path = write(tmp_path, "a.json", b'[{"content": "c1", "title": "t1"},\n {"content": "' + "正文".encode("gbk") + b'", "title": "t"}]')
    with pytest.raises(DataError, match=rf"^{path}:2: text is GBK-encoded, not UTF-8"):
        read_examples(path, SUM)
    assert skipped_log(path, SUM)[0] == [{"source": "c1", "target": "t1"}]


# ---------------------------------------------------------------- values
@pytest.mark.parametrize("value,problem", [
    ("NaN", "NaN"), (json.dumps(float("inf")), "infinite"), ("null", "null"),
    ('{"a": 1}', "a nested object"), ('["a"]', "a list"),
])
def test_values_that_are_not_text_are_bad_rows(tmp_path, value, problem):
    path = write(tmp_path, "a.jsonl", f'{{"content": "c1", "title": "t1"}}\n{{"content": "c2", "title": {value}}}\n')
    with pytest.raises(DataError, match=rf"^{path}:2: target \(column 'title'\) is {problem}"):
        read_examples(path, SUM)
    with pytest.raises(DataError, match=rf"^{path}:2: target \(column 'title'\) is {problem}"):
        read_examples(path, SUM, allow_empty=("target",))  # empty may be allowed; missing never is
    assert skipped_log(path, SUM)[0] == [{"source": "c1", "target": "t1"}]


def test_nan_in_a_json_document_names_the_item(tmp_path):
    path = write(tmp_path, "a.json", '[\n {"content": "c1", "title": "t1"},\n {"content": "c2",\n  "title": NaN}\n]')
    with pytest.raises(DataError, match=rf"^{path}:3 \(item 2\): target \(column 'title'\) is NaN"):
        read_examples(path, SUM)


def test_numbers_become_text_ints_without_a_decimal_point(tmp_path):
    path = write(tmp_path, "a.jsonl", '{"text": 12, "label": 3}\n{"text": 2.5, "label": 3.0}\n{"text": true, "label": -1}\n')
    assert read_examples(path, {"text": "text", "label": "label"}) == [
        {"text": "12", "label": "3"}, {"text": "2.5", "label": "3"}, {"text": "true", "label": "-1"}]


# ---------------------------------------------------------------- encodings and line ends
@pytest.mark.parametrize("name,content", [
    ("a.txt", "第一行\r\n第二行\r\n\r\n"),
    ("a.csv", "content,title\r\n第一行,t1\r\n第二行,t2\r\n\r\n"),
    ("a.tsv", "content\ttitle\r\n第一行\tt1\r\n第二行\tt2\r\n\r\n"),
    ("a.jsonl", '{"content": "第一行", "title": "t1"}\r\n{"content": "第二行", "title": "t2"}\r\n\r\n'),
    ("a.json", '[{"content": "第一行", "title": "t1"},\r\n {"content": "第二行", "title": "t2"}]\r\n\r\n'),
])
def test_bom_crlf_and_empty_trailing_line(tmp_path, name, content):
    path = write(tmp_path, name, "\ufeff".encode("utf-8") + content.encode("utf-8"))
    if name.endswith(".txt"):
        assert load_texts(path, None) == ["第一行", "第二行"]
    else:
        assert read_examples(path, SUM) == [{"source": "第一行", "target": "t1"}, {"source": "第二行", "target": "t2"}]


def test_crlf_inside_a_quoted_csv_field_and_line_numbers_after_it(tmp_path):
    path = write(tmp_path, "a.csv", 'content,title\r\n"a\r\nb",t1\r\nc,\r\n')
    with pytest.raises(DataError, match=rf"^{path}:4: empty target"):
        read_examples(path, SUM)


def test_non_utf8_line_inside_a_quoted_csv_field_makes_only_that_row_bad(tmp_path):
    path = write(tmp_path, "a.csv", b'content,title\n"gbk ' + "正文".encode("gbk") + b'\nmore",t1\nc2,t2\n')
    with pytest.raises(DataError, match=rf"^{path}:2: text is GBK-encoded, not UTF-8"):
        read_examples(path, SUM)
    assert skipped_log(path, SUM)[0] == [{"source": "c2", "target": "t2"}]


def test_non_utf8_header_is_not_skippable(tmp_path):
    path = write(tmp_path, "a.csv", "正文,title\n".encode("gbk") + b"c,t\n")
    with pytest.raises(DataError, match=rf"^{path}:1: text is GBK-encoded, not UTF-8"):
        read_examples(path, SUM, skip_bad_rows=True)
