"""Data loading for every trainer: local JSON/JSONL/TSV/CSV/TXT files and paddlenlp datasets.

This module is deliberately *not* a package called ``datasets``: a top-level
``datasets/`` package would shadow the Hugging Face library paddlenlp imports.
``datasets/`` holds data files only.

Every bad row is reported with its file and line, before any training starts.
"""
import csv
import io
import json
import os
import re

# dataset name -> (text column, summary column), as in HF's run_summarization.py
SUMMARIZATION_NAME_MAPPING = {
    "lcsts_new": ("source", "target"),
    "csl": (1, 2),
}

SUPPORTED_EXTENSIONS = (".json", ".jsonl", ".tsv", ".csv", ".txt")


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


def _where(path, line_no):
    return f"{path}:{line_no}" if line_no else path


def _bad(error, on_error):
    """Raise a bad-row error, or hand it to on_error (skip_bad_rows) and carry on with the next row."""
    if on_error is None:
        raise error
    on_error(error)


def _read_text_lines(path, on_error=None):
    """Yield (line_no, text) for every line, decoding UTF-8 line by line so a bad byte is located."""
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        raise DataError(f"{path}: file is empty")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    for line_no, raw_line in enumerate(raw.splitlines(), start=1):
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError as e:
            _bad(DataError(
                f"{path}:{line_no}: text is not UTF-8 (byte {raw_line[e.start:e.start + 1]!r} at column {e.start + 1}); "
                f"re-encode the file as UTF-8, e.g. `iconv -f GBK -t UTF-8 {os.path.basename(path)}`"
            ), on_error)
            continue
        yield line_no, text


def _file_format(path):
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise DataError(f"{path}: unsupported file type {ext!r}; use one of {', '.join(SUPPORTED_EXTENSIONS)}")
    return ext[1:]


def _json_rows(path, lines, on_error=None):
    """A .json file is either one JSON array/object of rows, or JSON lines."""
    text = "\n".join(t for _, t in lines)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        # Not a single document: treat as JSON lines, which locates the broken line.
        yield from _jsonl_rows(path, lines, on_error)
        return
    if isinstance(data, dict):
        data = data.get("data", [data])
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for i, row in enumerate(data, start=1):
        yield (f"item {i}", row)


def _jsonl_rows(path, lines, on_error=None):
    for line_no, text in lines:
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            _bad(DataError(f"{path}:{line_no}: malformed JSON ({e.msg} at column {e.colno})"), on_error)
            continue
        yield line_no, row


def _delimited_rows(path, lines, delimiter, has_header):
    header = None
    for line_no, text in lines:
        if not text.strip():
            continue
        if delimiter == "\t":
            fields = text.split("\t")  # TSV from the wild holds quotes as plain text
        else:
            fields = next(csv.reader(io.StringIO(text)))
        if has_header and header is None:
            header = [h.strip() for h in fields]
            continue
        yield line_no, (dict(zip(header, fields)) if header else fields)


def _txt_rows(path, lines):
    for line_no, text in lines:
        if text.strip():
            yield line_no, [text]


def iter_rows(path, has_header, on_error=None):
    """Yield (line_no, row) where row is a dict (named columns) or a list (columns by index).

    A line that cannot be decoded or parsed raises DataError, or with on_error set is passed
    to it and skipped. An empty or missing file always raises.
    """
    fmt = _file_format(path)
    lines = _read_text_lines(path, on_error)
    if fmt == "json":
        return _json_rows(path, list(lines), on_error)
    if fmt == "jsonl":
        return _jsonl_rows(path, lines, on_error)
    if fmt == "txt":
        return _txt_rows(path, lines)
    return _delimited_rows(path, lines, "\t" if fmt == "tsv" else ",", has_header)


def _get_column(row, column, path, line_no):
    if isinstance(row, dict):
        if isinstance(column, int):
            keys = list(row.keys())
            if column >= len(keys):
                raise DataError(f"{_where(path, line_no)}: column index {column} out of range (row has {len(keys)} columns)")
            return row[keys[column]]
        if column not in row:
            raise DataError(
                f"{_where(path, line_no)}: missing column {column!r}; this row has columns {sorted(row.keys())}"
            )
        return row[column]
    if isinstance(row, list):
        if not isinstance(column, int):
            raise DataError(
                f"{_where(path, line_no)}: column {column!r} is a name but the file has no header; "
                f"give the column by index (0-based) instead"
            )
        if column >= len(row):
            raise DataError(f"{_where(path, line_no)}: missing column {column} (row has only {len(row)} columns)")
        return row[column]
    raise DataError(f"{_where(path, line_no)}: expected an object or a row of columns, got {type(row).__name__}")


def _error_line(error):
    """The line number a DataError names, for reporting the first bad row in file order."""
    where = str(error).split(": ", 1)[0]
    tail = where.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def normalize_column(column):
    """'1' and 1 both mean the second column; names stay names."""
    if isinstance(column, str) and column.strip().lstrip("-").isdigit():
        return int(column)
    return column


def read_examples(path, columns, skip_bad_rows=False, allow_empty=(), log=print):
    """Read a local file into a list of dicts keyed by the given column *roles*.

    columns: {role: column}, e.g. {"source": "content", "target": 2}. A column is a name
    (files with a header, JSON objects) or a 0-based index (headerless TSV/CSV, TXT).
    Delimited files are taken to have a header exactly when the columns are names.
    Bad rows raise DataError naming file and line, or are skipped and counted when
    skip_bad_rows is set. Roles in allow_empty may be empty strings.
    """
    columns = {role: normalize_column(col) for role, col in columns.items()}
    has_header = any(isinstance(c, str) for c in columns.values())
    examples, bad = [], []
    for line_no, row in iter_rows(path, has_header, on_error=bad.append if skip_bad_rows else None):
        try:
            example = {}
            for role, col in columns.items():
                value = _get_column(row, col, path, line_no)
                value = "" if value is None else str(value).strip()
                if not value and role not in allow_empty:
                    raise DataError(f"{_where(path, line_no)}: empty {role} (column {col!r})")
                example[role] = value
        except DataError as e:
            if not skip_bad_rows:
                raise
            bad.append(e)
            continue
        examples.append(example)
    skipped = len(bad)
    if skipped:
        first = min(bad, key=_error_line)
        log(f"skip_bad_rows: skipped {skipped} bad row(s) in {path}; first: {first}")
    if not examples:
        raise DataError(f"{path}: no usable rows" + (f" ({skipped} skipped as bad)" if skipped else ""))
    return examples


def load_paddlenlp_dataset(name, splits, data_files=None):
    """A named paddlenlp dataset: downloads when online, reads data_files (its own format) otherwise."""
    from paddlenlp.datasets import load_dataset

    try:
        if data_files:
            return [list(load_dataset(name, data_files=path, lazy=False)) for path in data_files]
        return [list(ds) for ds in load_dataset(name, splits=splits, lazy=False)]
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise DataError(
            f"could not load dataset {name!r} through paddlenlp ({type(e).__name__}: {e}). "
            f"Offline, download its files elsewhere and pass them as train_file/dev_file"
        ) from e


def truncate(examples, max_samples):
    """HF-style max_*_samples cap; a non-positive cap means all."""
    return examples[:max_samples] if max_samples and max_samples > 0 else examples


BERT_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_char_vocab(texts, path, min_freq=1, extra_tokens=()):
    """A BertTokenizer vocab.txt built from the data itself, for models trained from scratch.

    BertTokenizer splits CJK text into single characters, so one entry per character
    covers Chinese; ASCII letters and digits also get '##' forms so WordPiece can spell
    any Latin word letter by letter instead of mapping it to [UNK].
    """
    from collections import Counter

    counts = Counter(ch for text in texts for ch in text.lower() if not ch.isspace())
    chars = [c for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_freq]
    ascii_alnum = [c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    tokens = list(BERT_SPECIAL_TOKENS) + list(extra_tokens)
    seen = set(tokens)
    for tok in chars + ascii_alnum + ["##" + c for c in ascii_alnum]:
        if tok not in seen:
            seen.add(tok)
            tokens.append(tok)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    return path


def load_texts(path, column, skip_bad_rows=False, max_samples=0, log=print):
    """One text per row of a .txt/.json/.jsonl/.tsv/.csv file (for the LM trainers); bad rows stop with file:line."""
    column = 0 if path.endswith(".txt") else ("text" if column is None else column)
    rows = read_examples(path, {"text": column}, skip_bad_rows=skip_bad_rows, log=log)
    return [r["text"] for r in truncate(rows, max_samples)]


CJK_SPACE = re.compile(r"(?<=[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef])\s+|\s+(?=[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef])")


def decode_tokens(tokenizer, ids, skip_ids=()):
    """Token ids -> text without special tokens; BertTokenizer's spaces around CJK characters are dropped."""
    skip = set(tokenizer.all_special_ids) | set(skip_ids)
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in ids if int(i) not in skip])
    return CJK_SPACE.sub("", tokenizer.convert_tokens_to_string(tokens)).strip()
