"""Issue #22, one clear line instead of a wrong message, for input files: the encoding a file really has (UTF-16 with
or without a BOM, GBK), a header without rows, a dataset folder without a train split, a directory, FIFO or device
given as a data file (named, never blocked on), dev_file together with dev_size. Each case at the reader, and
through a real entry point (`cli([...])`: exit 2 and one `error:` line naming the file)."""
import json
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paddle_finetune.data.examples import read_examples
from paddle_finetune.data.readers import _utf16_kind, iter_rows
from paddle_finetune.errors import DataError

SUM = {"source": "content", "target": "title"}
ROWS = [{"content": f"第{i}条正文，讲述了城市的新闻。", "title": f"标题{i}"} for i in range(12)]


def tsv_text(rows):
    return "content\ttitle\n" + "".join(f"{r['content']}\t{r['title']}\n" for r in rows)


def error_line(capsys, cli, argv):
    """The one `error:` line of a refused command (exit status 2)."""
    with pytest.raises(SystemExit) as e:
        cli(argv)
    assert e.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


def train_cli(capsys, tmp_path, *args):
    import train

    out = tmp_path / "out"
    line = error_line(capsys, train.cli, [f"--output_dir={out}", "--device=cpu", "--report_to=none", "--max_steps=1", *args])
    assert not out.exists()  # refused before output_dir is touched
    return line


# ---------------------------------------------------------------------------- encodings
@pytest.mark.parametrize("codec, named", [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16LE"), ("utf-16-be", "UTF-16BE")])
def test_utf16_files_are_named_utf16_not_gbk(tmp_path, codec, named):
    path = tmp_path / "windows.tsv"
    path.write_bytes(tsv_text(ROWS).encode(codec))
    with pytest.raises(DataError) as e:
        read_examples(str(path), SUM)
    message = str(e.value)
    assert message.startswith(f"{path}: text is {named} (what Windows calls \"Unicode\"), not UTF-8")
    assert f"iconv -f {named} -t UTF-8" in message and "GBK" not in message


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=2, max_size=300))
def test_utf8_text_is_never_taken_for_utf16(text):
    """Any UTF-8 text without NUL characters: no false alarm (zero bytes are what UTF-16 is told by)."""
    if "\x00" not in text:
        assert _utf16_kind(text.encode("utf-8")) is None


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x9fff, categories=("L", "N", "P", "Zs")),
                              min_size=1, max_size=40), min_size=2, max_size=20),
       codec=st.sampled_from(["utf-16-le", "utf-16-be"]))
def test_bom_less_utf16_with_line_breaks_is_recognised(lines, codec):
    """Rows of letters, digits, punctuation and spaces (CJK ones included: U+4E00 has a zero byte too)."""
    raw = "\n".join(lines).encode(codec)
    assert _utf16_kind(raw) == codec.upper().replace("UTF-16-", "UTF-16")


def test_gbk_is_named_gbk_and_other_encodings_are_not_guessed(tmp_path, capsys):
    gbk = tmp_path / "gbk.tsv"
    gbk.write_bytes(tsv_text(ROWS).encode("gbk"))
    assert f"error: {gbk}:2: text is GBK-encoded, not UTF-8" in train_cli(capsys, tmp_path, f"--train_file={gbk}")
    latin1 = tmp_path / "latin1.tsv"
    latin1.write_bytes("content\ttitle\ncafé au lait\tcafé\n".encode("latin-1"))
    with pytest.raises(DataError) as e:
        read_examples(str(latin1), SUM)
    assert str(e.value).startswith(f"{latin1}:2: text is not UTF-8 (byte b'\\xe9' at column 4)")
    assert "GBK" not in str(e.value) and "iconv -f ITS_ENCODING" in str(e.value)


def test_utf8_with_a_bom_reads(tmp_path):
    path = tmp_path / "bom.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + tsv_text(ROWS).encode("utf-8"))
    assert len(read_examples(str(path), SUM)) == len(ROWS)


# ---------------------------------------------------------------------------- a header and no rows
@pytest.mark.parametrize("name, text", [("h.tsv", "content\ttitle\n"), ("h.csv", "content,title\r\n\r\n")])
def test_a_header_only_file_says_it_has_no_rows(tmp_path, capsys, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    expected = f"error: {path}: no rows, only a header (line 1: content, title)"
    assert train_cli(capsys, tmp_path, f"--train_file={path}") == expected  # columns detected from the header
    assert train_cli(capsys, tmp_path, f"--train_file={path}", "--text_column=0", "--summary_column=1") == expected


# ---------------------------------------------------------------------------- what a path is
def test_a_directory_given_as_a_data_file_says_it_is_a_directory(tmp_path, capsys):
    folder = tmp_path / "data.jsonl"
    folder.mkdir()
    line = train_cli(capsys, tmp_path, f"--train_file={folder}")
    assert line.startswith(f"error: {folder}: is a directory, not a data file")


def test_a_fifo_given_as_a_data_file_is_named_and_never_blocks(tmp_path, capsys):
    fifo = tmp_path / "rows.jsonl"
    os.mkfifo(fifo)
    unblocked = threading.Event()

    def unblock_a_reader():  # a reader that blocked would wait forever: open the writing end to release it
        if not unblocked.wait(30):
            with open(fifo, "w"):
                pass

    threading.Thread(target=unblock_a_reader, daemon=True).start()
    try:
        line = train_cli(capsys, tmp_path, f"--train_file={fifo}")
    finally:
        unblocked.set()
    assert line.startswith(f"error: {fifo}: is a named pipe (FIFO), not a regular file")


def test_a_device_and_a_broken_link_are_named(tmp_path, capsys):
    if os.path.exists("/dev/null"):
        with pytest.raises(DataError, match=r"^/dev/null: is a character device, not a data file$"):
            list(iter_rows("/dev/null", has_header=False))
    link = tmp_path / "gone.jsonl"
    os.symlink(tmp_path / "nowhere.jsonl", link)
    assert train_cli(capsys, tmp_path, f"--train_file={link}") == (
        f"error: {link}: is a symbolic link to {str(tmp_path / 'nowhere.jsonl')!r}, which does not exist")
    real = tmp_path / "real.jsonl"
    real.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    os.symlink(real, tmp_path / "link.jsonl")
    assert len(read_examples(str(tmp_path / "link.jsonl"), SUM)) == len(ROWS)  # a link to a file reads


# ---------------------------------------------------------------------------- which splits
def test_a_dataset_folder_without_a_train_split_names_the_splits_it_has(tmp_path, capsys):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    for split in ("validation", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    line = train_cli(capsys, tmp_path, f"--dataset_name={folder}", "--text_column=content", "--summary_column=title")
    assert line.startswith(f"error: dataset {folder} has no train split (it has dev, test)")


def test_dev_file_with_dev_size_is_refused_naming_both(tmp_path, capsys):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    line = train_cli(capsys, tmp_path, f"--train_file={path}", f"--dev_file={path}", "--dev_size=3")
    assert line == (f"error: dev_file ({path}) and dev_size=3 both name a dev split: dev_size holds training rows out "
                    "as dev only when there is no dev file; set one of them")


def test_has_header_false_with_detected_columns_asks_for_indexes(tmp_path, capsys):
    path = tmp_path / "rows.csv"
    path.write_text("content,title\n" + "".join(f"{r['content']},{r['title']}\n" for r in ROWS), encoding="utf-8")
    assert train_cli(capsys, tmp_path, f"--train_file={path}", "--has_header=False") == (
        f"error: {path}: has_header=False: set text_column and summary_column by 0-based index")
    assert train_cli(capsys, tmp_path, f"--train_file={path}", "--has_header=maybe") == (
        "error: config key 'has_header' (from --has_header) must be 'auto', True or False, got 'maybe'")
