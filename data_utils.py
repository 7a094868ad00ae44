"""Data loading for every trainer: local JSON/JSONL/TSV/CSV/TXT files and named datasets
(a local Hugging Face folder, a Hugging Face dataset name, or a paddlenlp dataset name).

This module is deliberately *not* a package called ``datasets``: a top-level
``datasets/`` package would shadow the Hugging Face library paddlenlp imports.
``datasets/`` holds data files only.

Every bad row is reported with its file and line (or dataset, split and row), before any
training starts. File rules:

* CSV: the whole file goes through the ``csv`` module (strict, no field-size limit), so a
  quoted field may hold commas and line breaks; a row is named by its first line.
* TSV: tab-separated, one record a line, quotes are plain text, as real TSV files hold
  them (``"引号"开头的标题``). Only a field that is *properly quoted* -- it starts with
  ``"``, every ``"`` inside is doubled, and the closing ``"`` is followed by a tab, a line
  break or the end of the file -- is unquoted and may hold tabs and line breaks.
* CSV/TSV: every row must have the header's number of fields (headerless: the first
  row's); header names must be unique.
* JSON: a ``.json`` file is one document (a list of rows, ``{"data": [rows]}`` or one
  object), or JSON lines; a broken document is reported at its real line and column.
  Object keys must be unique.
* Values: text, or numbers (ints as ``"3"``, integral floats too, so ``3.0`` and ``3``
  are one label); null, NaN, infinities, nested objects and lists are bad rows.

Imports: the standard library; numpy, Hugging Face `datasets` and paddlenlp inside the functions that
need them; nothing of the project.
"""
import contextlib
import csv
import json
import math
import numbers
import os
import re

# dataset name -> (text column, summary column), as in HF's run_summarization.py
SUMMARIZATION_NAME_MAPPING = {
    "lcsts_new": ("source", "target"),
    "csl": (1, 2),
}

# dataset name -> {role: column} of the rows load_named_dataset reads. paddlenlp's lcsts_new
# reader renames the files' content/summary to source/target (paddlenlp/datasets/lcsts_new.py),
# so those are the columns its rows have.
DATASET_COLUMNS = {
    "yelp_review_full": {"text": "text", "label": "label"},
    "imdb": {"text": "text", "label": "label"},
    "wikitext": {"text": "text"},
    "lcsts_new": {"text": "source", "summary": "target"},
    "chnsenticorp": {"text": "text", "label": "label"},
}

# paddlenlp datasets read through paddlenlp, with their splits; every other name is Hugging Face's.
PADDLENLP_DATASETS = {"lcsts_new": ("train", "dev"), "chnsenticorp": ("train", "dev", "test")}

# Datasets whose rows are the lines of a text: an empty row is a paragraph break, skipped like a
# blank line of a .txt file, not a bad row.
LINE_DATASETS = {"wikitext"}

SPLIT_NAMES = {"train": "train", "validation": "dev", "valid": "dev", "dev": "dev", "test": "test"}

SUPPORTED_EXTENSIONS = (".json", ".jsonl", ".tsv", ".csv", ".txt")

# csv's default limit (131072 characters) is below a long document; 2**31 - 1 fits a C long everywhere.
CSV_FIELD_LIMIT = 2**31 - 1

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_TSV_SEPARATOR = re.compile(r"[\t\n]")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_INDEX = re.compile(r"\s*-?[0-9]+\s*")
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


class DataError(ValueError):
    """Bad input data; the message names the file and line (or dataset, split and row)."""


def _where(path, line_no):
    return f"{path}:{line_no}" if line_no else path


def _bad(error, on_error):
    """Raise a bad-row error, or hand it to on_error (skip_bad_rows) and carry on with the next row."""
    if on_error is None:
        raise error
    on_error(error)


# ----------------------------------------------------------------------------
# reading text
# ----------------------------------------------------------------------------
def _split_lines(text):
    """Lines split where bytes.splitlines splits (\\n, \\r\\n, \\r), not at str.splitlines' extra
    separators (\\x0c, \\u2028, ...), so line numbers agree with the per-line UTF-8 check."""
    lines = _LINE_BREAK.split(text)
    return lines[:-1] if lines[-1] == "" else lines


def _not_utf8(path, line_no, raw_line, error):
    return DataError(
        f"{path}:{line_no}: text is not UTF-8 (byte {raw_line[error.start:error.start + 1]!r} at column {error.start + 1}); "
        f"re-encode the file as UTF-8, e.g. `iconv -f GBK -t UTF-8 {os.path.basename(path)}`"
    )


def _read_lines(path):
    """(lines, bad): the file's lines without BOM and line ends; bad maps the line number of
    every non-UTF-8 line to its DataError. Such lines are kept, decoded with U+FFFD, so the
    tabs, commas and quotes around them still delimit rows and only their row is bad."""
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        raise DataError(f"{path}: file is empty")
    try:
        return _split_lines(raw.decode("utf-8")), {}
    except UnicodeDecodeError:
        pass
    lines, bad = [], {}
    for line_no, raw_line in enumerate(raw.splitlines(), start=1):
        try:
            lines.append(raw_line.decode("utf-8"))
        except UnicodeDecodeError as e:
            bad[line_no] = _not_utf8(path, line_no, raw_line, e)
            lines.append(raw_line.decode("utf-8", errors="replace"))
    return lines, bad


def _first_bad_line(bad, first, last):
    """The UTF-8 error of the first non-UTF-8 line among first..last, or None."""
    if not bad:
        return None
    return next((bad[n] for n in range(first, last + 1) if n in bad), None)


def _file_format(path):
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise DataError(f"{path}: unsupported file type {ext!r}; use one of {', '.join(SUPPORTED_EXTENSIONS)}")
    return ext[1:]


# ----------------------------------------------------------------------------
# JSON and JSON lines
# ----------------------------------------------------------------------------
class _DuplicateKeys(dict):
    """A JSON object that named a key twice; json keeps the last value, which may not be the one meant."""

    duplicate_keys = ()


def _object(pairs):
    row = dict(pairs)
    if len(row) == len(pairs):
        return row
    seen, dups = set(), []
    for key, _ in pairs:
        if key in seen and key not in dups:
            dups.append(key)
        seen.add(key)
    row = _DuplicateKeys(row)
    row.duplicate_keys = tuple(dups)
    return row


def _loads(text):
    return json.loads(text, object_pairs_hook=_object)


def _malformed_json(path, error, line_offset=0):
    return DataError(f"{path}:{error.lineno + line_offset}: malformed JSON ({error.msg} at column {error.colno})")


def _skip_space(text, pos):
    return _JSON_SPACE.match(text, pos).end()


def _array_spans(text, pos, decoder):
    """(start, end) of every item of the (valid) JSON array opening at pos."""
    spans = []
    pos = _skip_space(text, pos + 1)
    if text.startswith("]", pos):
        return spans
    while True:
        _, end = decoder.raw_decode(text, pos)
        spans.append((pos, end))
        pos = _skip_space(text, end)
        if text.startswith("]", pos):
            return spans
        pos = _skip_space(text, pos + 1)  # past the ','


def _member_start(text, pos, key, decoder):
    """Where the value of `key` starts in the (valid, duplicate-free) JSON object opening at pos."""
    pos = _skip_space(text, pos + 1)
    while True:
        name, pos = decoder.raw_decode(text, pos)
        start = _skip_space(text, _skip_space(text, pos) + 1)  # past the ':'
        if name == key:
            return start
        _, pos = decoder.raw_decode(text, start)
        pos = _skip_space(text, _skip_space(text, pos) + 1)  # past the ','


def _document_items(path, text, doc):
    """[(start, end, row)] of a parsed .json document: a list of rows, {"data": [rows]} or one row."""
    if isinstance(doc, dict) and "data" in doc:
        if getattr(doc, "duplicate_keys", ()):
            raise DataError(f"{path}: duplicate key(s) {list(doc.duplicate_keys)} in the top-level object")
        if not isinstance(doc["data"], list):
            raise DataError(f"{path}: expected \"data\" to be a JSON list of objects, got {type(doc['data']).__name__}")
        decoder = json.JSONDecoder()
        spans = _array_spans(text, _member_start(text, _skip_space(text, 0), "data", decoder), decoder)
        return [(s, e, row) for (s, e), row in zip(spans, doc["data"])]
    if isinstance(doc, dict):
        return [(_skip_space(text, 0), len(text.rstrip()), doc)]
    if isinstance(doc, list):
        spans = _array_spans(text, _skip_space(text, 0), json.JSONDecoder())
        return [(s, e, row) for (s, e), row in zip(spans, doc)]
    raise DataError(f"{path}: expected a JSON list of objects, got {type(doc).__name__}")


def _looks_like_json_lines(lines, sample=100):
    """Whether at least half of the first non-blank lines parse on their own: JSON lines with a
    broken line, not a pretty-printed document (whose lines are fragments like `{` or `"a": 1,`)."""
    candidates = [t for t in lines if t.strip()][:sample]
    parsed = 0
    for t in candidates:
        try:
            json.loads(t)
            parsed += 1
        except json.JSONDecodeError:
            pass
    return len(candidates) > 1 and 2 * parsed >= len(candidates)


def _json_rows(path, lines, bad_lines, on_error=None):
    """A .json file is one JSON document, or JSON lines (more than one value, one a line)."""
    text = "\n".join(lines)
    try:
        doc = _loads(text)
    except json.JSONDecodeError as e:
        # "Extra data": a complete first value with more after it, i.e. JSON lines.
        if e.msg == "Extra data" or (not text.lstrip().startswith("[") and _looks_like_json_lines(lines)):
            yield from _jsonl_rows(path, lines, bad_lines, on_error)
            return
        raise _malformed_json(path, e) from None
    line, counted, unplaced = 1, 0, set(bad_lines)
    for i, (start, end, row) in enumerate(_document_items(path, text, doc), start=1):
        line += text.count("\n", counted, start)
        counted = start
        last = line + text.count("\n", start, end)
        error = _first_bad_line(bad_lines, line, last)
        if error is not None:
            unplaced -= set(range(line, last + 1))
            _bad(error, on_error)
            continue
        yield f"{line} (item {i})", row
    if unplaced:  # a bad byte outside every row (in the wrapper object) cannot be skipped with a row
        raise bad_lines[min(unplaced)]


def _jsonl_rows(path, lines, bad_lines, on_error=None):
    for line_no, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        if line_no in bad_lines:
            _bad(bad_lines[line_no], on_error)
            continue
        try:
            row = _loads(text)
        except json.JSONDecodeError as e:
            _bad(_malformed_json(path, e, line_offset=line_no - 1), on_error)
            continue
        yield line_no, row


# ----------------------------------------------------------------------------
# CSV and TSV
# ----------------------------------------------------------------------------
def _csv_records(lines):
    """Yield (first_line, last_line, fields, error) for every CSV record; a quoted field may span lines."""
    csv.field_size_limit(CSV_FIELD_LIMIT)
    # strict: `"a"b` is an error, not a silent `ab`; lines are fed back with "\n" so csv's
    # line_num counts the same lines as the UTF-8 check.
    reader = csv.reader((line + "\n" for line in lines), strict=True)
    done = 0
    while True:
        try:
            fields, error = next(reader), None
        except StopIteration:
            return
        except csv.Error as e:
            fields, error = None, f"malformed CSV ({e})"
        yield done + 1, reader.line_num, fields, error
        done = reader.line_num


def _tsv_quote_end(text, pos):
    """Index of the quote closing a properly quoted field opening at pos, else None (a plain field)."""
    i = pos + 1
    while True:
        q = text.find('"', i)
        if q < 0:
            return None
        if text.startswith('""', q):
            i = q + 2
            continue
        return q if q + 1 == len(text) or text[q + 1] in "\t\n" else None


def _tsv_field(text, pos):
    """(value, end, quoted) of the TSV field at pos; end is the tab or line break after it, or len(text)."""
    if text.startswith('"', pos):
        close = _tsv_quote_end(text, pos)
        if close is not None:
            return text[pos + 1:close].replace('""', '"'), close + 1, True
    match = _TSV_SEPARATOR.search(text, pos)
    end = match.start() if match else len(text)
    return text[pos:end], end, False


def _tsv_quoted_record(text, pos, line):
    """(fields, end, last_line, error) of a TSV record at pos whose first line holds a quote."""
    fields, first, error = [], line, None
    while True:
        start = pos
        value, pos, quoted = _tsv_field(text, pos)
        breaks = text.count("\n", start, pos) if quoted else 0
        if breaks and "\t" in value and error is None:
            # A stray quote opening one row's field and a quote ending a later row's field read
            # as one field that swallows the rows between, with the same number of fields:
            # TSV cannot tell that from a real multi-line field, so neither is guessed.
            error = (f"a quoted field opens on line {first} and closes on line {line + breaks}, holding tabs and "
                     "line breaks: either a stray quote merges rows or the field needs a format that can hold "
                     "both (.csv, .jsonl); remove the quote or convert the file")
        line += breaks
        fields.append(value)
        if text.startswith("\t", pos):
            pos += 1
            continue
        return fields, pos, line, error


def _tsv_records(lines):
    """Yield (first_line, last_line, fields, error) for every TSV record (the rules in the module docstring)."""
    text = "\n".join(lines)
    pos, line, n = 0, 1, len(text)
    while pos < n:
        eol = text.find("\n", pos)
        eol = n if eol < 0 else eol
        first = line
        # Only a field that starts with a quote can be quoted: any other line is plain tab-split.
        if not text.startswith('"', pos) and text.find('\t"', pos, eol) < 0:
            fields, error, pos = text[pos:eol].split("\t"), None, eol
        else:
            fields, pos, line, error = _tsv_quoted_record(text, pos, line)
        yield first, line, fields, error
        pos, line = pos + 1, line + 1


def _header_names(path, line_no, fields):
    names = [h.strip() for h in fields]
    seen = set()
    for name in names:
        if name in seen:
            raise DataError(f"{path}:{line_no}: duplicate column name {name!r} in the header; rename one of them "
                            "(which column is meant would be ambiguous)")
        seen.add(name)
    return names


def _delimited_rows(path, lines, bad_lines, delimiter, has_header, on_error=None):
    records = _tsv_records(lines) if delimiter == "\t" else _csv_records(lines)
    header, expected = None, None
    for first, last, fields, error in records:
        if first == last and not lines[first - 1].strip():
            continue  # a blank line is no row
        utf8_error = _first_bad_line(bad_lines, first, last)
        if has_header and header is None:
            # The header is not a row that can be skipped: every row depends on it.
            if utf8_error is not None:
                raise utf8_error
            if error is not None:
                raise DataError(f"{path}:{first}: header: {error}")
            header = _header_names(path, first, fields)
            expected = (len(header), f"the header (line {first})")
            continue
        if utf8_error is not None or error is not None:
            _bad(utf8_error or DataError(f"{path}:{first}: {error}"), on_error)
            continue
        if expected is None:
            expected = (len(fields), f"the first row (line {first})")
        if len(fields) != expected[0]:
            cause = "a tab inside a field" if delimiter == "\t" else "an unquoted comma"
            _bad(DataError(f"{path}:{first}: {len(fields)} fields, but {expected[1]} has {expected[0]}; "
                           f"{cause}, or a missing field?"), on_error)
            continue
        yield first, (dict(zip(header, fields)) if header else fields)


def _txt_rows(path, lines, bad_lines, on_error=None):
    for line_no, text in enumerate(lines, start=1):
        if line_no in bad_lines:
            _bad(bad_lines[line_no], on_error)
        elif text.strip():
            yield line_no, [text]


def iter_rows(path, has_header, on_error=None):
    """Yield (line_no, row) where row is a dict (named columns) or a list (columns by index).

    line_no is the row's first line; for a JSON document it reads "LINE (item N)". A row that
    cannot be decoded or parsed raises DataError, or with on_error set is passed to it and
    skipped. An empty or missing file, a bad header and a broken JSON document always raise.
    """
    fmt = _file_format(path)
    lines, bad_lines = _read_lines(path)
    if fmt == "json":
        yield from _json_rows(path, lines, bad_lines, on_error)
    elif fmt == "jsonl":
        yield from _jsonl_rows(path, lines, bad_lines, on_error)
    elif fmt == "txt":
        yield from _txt_rows(path, lines, bad_lines, on_error)
    else:
        yield from _delimited_rows(path, lines, bad_lines, "\t" if fmt == "tsv" else ",", has_header, on_error)


# ----------------------------------------------------------------------------
# rows -> examples
# ----------------------------------------------------------------------------
def _get_column(row, column, where):
    if isinstance(row, dict):
        if isinstance(column, int):
            keys = list(row.keys())
            if column >= len(keys):
                raise DataError(f"{where}: column index {column} out of range (row has {len(keys)} columns)")
            return row[keys[column]]
        if column not in row:
            raise DataError(f"{where}: missing column {column!r}; this row has columns {sorted(map(str, row.keys()))}")
        return row[column]
    if isinstance(row, list):
        if not isinstance(column, int):
            raise DataError(
                f"{where}: column {column!r} is a name but the file has no header; "
                f"give the column by index (0-based) instead"
            )
        if column >= len(row):
            raise DataError(f"{where}: missing column {column} (row has only {len(row)} columns)")
        return row[column]
    raise DataError(f"{where}: expected an object or a row of columns, got {type(row).__name__}")


def _as_text(value):
    """(text, None) for text or a number; (None, what it is instead) for anything else."""
    if isinstance(value, str):
        return value.strip(), None
    if value is None:
        return None, "null (a missing value)"
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, numbers.Integral):
        return str(int(value)), None
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return None, "NaN (a missing value)"
        if math.isinf(value):
            return None, "infinite"
        # 3.0 is how pandas/arrow hold the int 3 in a column with missing values: one label, not two.
        return (str(int(value)) if value.is_integer() else repr(value)), None
    if isinstance(value, dict):
        return None, "a nested object, not text"
    if isinstance(value, (list, tuple)):
        return None, "a list, not text"
    return None, f"a {type(value).__name__} value, not text"


def _example(where, row, columns, allow_empty):
    """{role: text} of one row, or DataError naming where and what is wrong."""
    dups = getattr(row, "duplicate_keys", ())
    if dups:
        raise DataError(f"{where}: duplicate key(s) {list(dups)} in one object (JSON keeps the last value silently)")
    example = {}
    for role, col in columns.items():
        text, problem = _as_text(_get_column(row, col, where))
        if problem:
            raise DataError(f"{where}: {role} (column {col!r}) is {problem}")
        if not text and role not in allow_empty:
            raise DataError(f"{where}: empty {role} (column {col!r})")
        example[role] = text
    return example


def normalize_column(column):
    """'1' and 1 both mean the second column; names stay names."""
    if isinstance(column, str) and _INDEX.fullmatch(column):
        return int(column)
    return column


def _checked_columns(columns):
    """{role: column} with CLI digits read as indexes; a column that names no one column is refused."""
    checked = {}
    for role, given in columns.items():
        col = normalize_column(given)
        if isinstance(col, bool) or not isinstance(col, (int, str)):
            raise DataError(f"column {given!r} for {role}: give a column name or a 0-based column index")
        if isinstance(col, int) and col < 0:
            raise DataError(f"column {given!r} for {role}: negative column indexes are not supported "
                            "(-1 would quietly mean the last column); count from 0 at the left, or use the column name")
        checked[role] = col
    return checked


def _checked_examples(located_rows, columns, allow_empty, on_error):
    """Examples of (where, row) pairs; a bad row raises, or goes to on_error and is left out."""
    examples = []
    for where, row in located_rows:
        try:
            examples.append(_example(where, row, columns, allow_empty))
        except DataError as e:
            _bad(e, on_error)
    return examples


def _finish(source, examples, bad, log):
    # Rows are read in order, so bad[0] is the first bad row in the file.
    if bad:
        log(f"skip_bad_rows: skipped {len(bad)} bad row(s) in {source}; first: {bad[0]}")
    if not examples:
        raise DataError(f"{source}: no usable rows" + (f" ({len(bad)} skipped as bad)" if bad else ""))
    return examples


def read_examples(path, columns, skip_bad_rows=False, allow_empty=(), log=print):
    """Read a local file into a list of dicts keyed by the given column *roles*.

    columns: {role: column}, e.g. {"source": "content", "target": 2}. A column is a name
    (files with a header, JSON objects) or a 0-based index (headerless TSV/CSV, TXT).
    Delimited files are taken to have a header exactly when the columns are names.
    Bad rows raise DataError naming file and line, or are skipped and counted when
    skip_bad_rows is set. Roles in allow_empty may be empty strings (never null or NaN).
    """
    columns = _checked_columns(columns)
    has_header = any(isinstance(c, str) for c in columns.values())
    bad = []
    on_error = bad.append if skip_bad_rows else None
    located = ((_where(path, line_no), row) for line_no, row in iter_rows(path, has_header, on_error))
    return _finish(path, _checked_examples(located, columns, allow_empty, on_error), bad, log)


def column_names(path):
    """The column names a file offers read with a header: its CSV/TSV header, or the keys of its first JSON
    object (bad rows before it are passed over; reading the file reports them). For detecting columns
    (prediction CLIs); DataError naming the file when its rows have no names (.txt, JSON rows that are lists)."""
    for line_no, row in iter_rows(path, has_header=True, on_error=lambda e: None):
        if isinstance(row, dict):
            return [str(k) for k in row]
        raise DataError(f"{_where(path, line_no)}: rows have no column names; give the columns by 0-based index")
    raise DataError(f"{path}: no rows")


# ----------------------------------------------------------------------------
# named datasets
# ----------------------------------------------------------------------------
def _base_name(name):
    """"Salesforce/wikitext" -> "wikitext": the Hub moved many datasets under an owner."""
    return str(name).rstrip("/").rsplit("/", 1)[-1]


def dataset_columns(name):
    """DATASET_COLUMNS of a dataset name, also under a Hub owner ("Salesforce/wikitext"); None if unknown.
    A local folder is never looked up by its folder name: its columns are whatever was saved there."""
    if _is_local(name):
        return None
    return DATASET_COLUMNS.get(name) or DATASET_COLUMNS.get(_base_name(name))


def _is_local(name):
    return os.path.isdir(os.path.expanduser(name)) or name.startswith(("/", "./", "../", "~", ".\\", "..\\"))


def _hf_offline():
    """HF_DATASETS_OFFLINE, else HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE, read now (datasets reads them once, at import)."""
    value = os.environ.get("HF_DATASETS_OFFLINE")
    if value is not None:
        return value.upper() in _TRUE_VALUES
    return any(os.environ.get(v, "").upper() in _TRUE_VALUES for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@contextlib.contextmanager
def _hf_offline_mode(offline):
    """datasets fixes its offline flag when first imported (paddlenlp imports it early), so a flag
    set later is applied for the call and the old value put back."""
    from datasets import config

    saved = config.HF_HUB_OFFLINE, config.HF_DATASETS_OFFLINE
    if offline:
        config.HF_HUB_OFFLINE = config.HF_DATASETS_OFFLINE = True
    try:
        yield
    finally:
        config.HF_HUB_OFFLINE, config.HF_DATASETS_OFFLINE = saved


HF_OFFLINE_ADVICE = (
    "Offline, get it on a machine with internet access and either save it with "
    "`datasets.load_dataset(...).save_to_disk(DIR)` (or write its splits as train/validation/test .csv, .json, "
    ".jsonl or .parquet files in DIR) and pass DIR as dataset_name, or pass its files as train_file/dev_file"
)
PADDLENLP_OFFLINE_ADVICE = (
    "Offline, download its files elsewhere and pass them as train_file/dev_file (paddlenlp's own format), "
    "or pass a local dataset folder as dataset_name"
)


def _needs_download(shown, reason, advice):
    return DataError(f"dataset {shown} needs a download and is not in the local cache ({reason}). {advice}")


def _hf_load_dataset(*args, **kwargs):
    """datasets' own load_dataset. Importing paddlenlp replaces datasets.load_dataset with a wrapper
    that swaps any path whose last part names one of paddlenlp's scripts (imdb, glue, chnsenticorp,
    ...) for that script -- even a local folder called imdb -- so the public name is not used."""
    from datasets.load import load_dataset

    return load_dataset(*args, **kwargs)


def _split_dict(ds):
    """{split: rows} of what datasets returned (a DatasetDict, or one Dataset)."""
    if hasattr(ds, "keys"):
        return {str(split): ds[split] for split in ds.keys()}
    return {str(getattr(ds, "split", None) or "train"): ds}


def _saved_to_disk(path):
    return os.path.isfile(os.path.join(path, "dataset_dict.json")) or all(
        os.path.isfile(os.path.join(path, f)) for f in ("state.json", "dataset_info.json"))


def _files_by_split(path):
    """{split: [files]} as datasets resolves a folder (train.csv, validation.json, data/test-*.parquet, ...)."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    resolved = DataFilesDict.from_patterns(get_data_patterns(path), base_path=path)
    return {str(split): list(files) for split, files in resolved.items()}


def _mixed_format_files(path):
    """{split: [files]} when the folder's splits are in more than one format, else None."""
    try:
        files = _files_by_split(path)
    except Exception:  # noqa: BLE001 - then the folder's own error is the one to report
        return None
    return files if len({os.path.splitext(f)[1].lower() for fs in files.values() for f in fs}) > 1 else None


def _load_split_files(split, files):
    """One split read by the datasets builder of its files' format (datasets wants one format per folder)."""
    from datasets.data_files import DataFilesList
    from datasets.load import infer_module_for_data_files_list

    module, kwargs = infer_module_for_data_files_list(DataFilesList(files, [None] * len(files)))
    if module is None:
        raise DataError(f"{files[0]}: no datasets reader for this file type")
    return _hf_load_dataset(module, data_files={split: files}, split=split, **kwargs)


def _local_hf_folder(path, config_name):
    import datasets

    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise DataError(f"dataset folder not found: {path}")
    try:
        with _hf_offline_mode(True):  # a local folder never needs the network
            if _saved_to_disk(path):
                return _split_dict(datasets.load_from_disk(path))
            try:
                return _split_dict(_hf_load_dataset(path, config_name))
            except ValueError:
                files = _mixed_format_files(path)
                if files is None:
                    raise
                # train.csv beside validation.json: datasets refuses mixed formats, so read split by split.
                return {split: _load_split_files(split, fs) for split, fs in files.items()}
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many types for unreadable folders
        raise DataError(f"could not read dataset folder {path} with datasets ({type(e).__name__}: {e})") from e


def _hub_dataset(name, config_name, data_dir_or_files):
    kwargs = {}
    if isinstance(data_dir_or_files, str):
        kwargs["data_dir"] = data_dir_or_files  # datasets' meaning: a folder inside the dataset's repository
    elif data_dir_or_files:
        kwargs["data_files"] = data_dir_or_files
    offline = _hf_offline()
    shown = repr(name) + (f" (config {config_name!r})" if config_name else "")
    try:
        with _hf_offline_mode(offline):
            return _split_dict(_hf_load_dataset(name, config_name, **kwargs))
    except ConnectionError as e:  # datasets' offline error is one too; it tried the cache first
        reason = "offline: HF_DATASETS_OFFLINE is set" if offline else f"the Hub is unreachable: {e}"
        raise _needs_download(shown, reason, HF_OFFLINE_ADVICE) from e
    except Exception as e:  # noqa: BLE001 - unknown names, configs and broken caches raise many types
        raise DataError(f"could not load Hugging Face dataset {shown} ({type(e).__name__}: {e})") from e


def _paddlenlp_cached(name, splits):
    """Whether paddlenlp already has the split files (its download retries take seconds to fail offline)."""
    try:
        from paddlenlp.datasets.dataset import import_main_class
        from paddlenlp.utils.env import DATA_HOME

        builder = import_main_class(name)
        return all(os.path.exists(os.path.join(DATA_HOME, builder.__name__, builder.SPLITS[s].file)) for s in splits)
    except Exception:  # noqa: BLE001 - another paddlenlp layout: let paddlenlp itself decide
        return True


def _paddlenlp_files(name, data_dir_or_files):
    """{split: path} of local files for a paddlenlp dataset: a dict by split, or paths in its split order."""
    splits = PADDLENLP_DATASETS[name]
    if isinstance(data_dir_or_files, dict):
        files = {SPLIT_NAMES.get(str(s).lower(), s): p for s, p in data_dir_or_files.items()}
    else:
        paths = [data_dir_or_files] if isinstance(data_dir_or_files, str) else list(data_dir_or_files)
        files = dict(zip(splits, paths))
        if len(paths) > len(splits):
            raise DataError(f"{name}: {len(paths)} files for its {len(splits)} splits {list(splits)}")
    for split, path in files.items():
        # paddlenlp reads an unknown split name as no rows at all.
        if split not in splits:
            raise DataError(f"{name}: no split {split!r}; it has {list(splits)}")
        if not os.path.isfile(path):
            raise DataError(f"data file not found: {path}")
    return files


def _paddlenlp_splits(name, data_dir_or_files):
    splits = PADDLENLP_DATASETS[name]
    if data_dir_or_files:
        files = _paddlenlp_files(name, data_dir_or_files)
        return dict(zip(files, load_paddlenlp_dataset(name, list(files), data_files=list(files.values()))))
    if _hf_offline() and not _paddlenlp_cached(name, splits):
        raise _needs_download(repr(name), "offline: HF_DATASETS_OFFLINE is set, and paddlenlp has not downloaded it",
                              PADDLENLP_OFFLINE_ADVICE)
    return dict(zip(splits, load_paddlenlp_dataset(name, splits)))


def _renamed_splits(splits, source, wanted=None):
    """{train/dev/test: (original name, rows)} for validation/valid/dev; two splits that would share a
    name are refused, and so is a wanted split the dataset does not have."""
    renamed = {}
    for split, rows in splits.items():
        new = SPLIT_NAMES.get(split.lower(), split)
        if new in renamed:
            raise DataError(f"{source}: splits {renamed[new][0]!r} and {split!r} would both be {new!r}")
        renamed[new] = (split, rows)
    if wanted is None:
        return renamed
    missing = [s for s in wanted if s not in renamed]
    if missing:
        raise DataError(f"{source}: no split(s) {missing}; it has {sorted(renamed)}")
    return {s: renamed[s] for s in wanted}


def _rows_of(split_rows):
    """Python dicts of a split: a datasets.Dataset converts column-wise, much faster than row by row."""
    return split_rows.to_list() if hasattr(split_rows, "to_list") else split_rows


def _allowed_empty(allow_empty, split, columns):
    if allow_empty is None:
        # Test splits often come without references (chnsenticorp's test labels are ""): every role but the text.
        return tuple(list(columns)[1:]) if split == "test" else ()
    if isinstance(allow_empty, dict):
        return tuple(allow_empty.get(split, ()))
    return tuple(allow_empty)


def load_named_dataset(name, config_name=None, data_dir_or_files=None, columns=None, skip_bad_rows=False,
                       allow_empty=None, splits=None, log=print):
    """{split: [row dicts]} of a named dataset, splits named train/dev/test (validation/valid -> dev).

    name: a local folder datasets reads (csv/json/jsonl/parquet files per split, or save_to_disk
    output), a paddlenlp dataset (PADDLENLP_DATASETS), or a Hugging Face dataset name, read from
    the local cache when offline (HF_DATASETS_OFFLINE). config_name: the HF config
    ("wikitext-2-raw-v1"). data_dir_or_files: for paddlenlp, local files in its own format
    ({split: path} or a list in its split order); for HF, datasets' data_dir (a str) or data_files.
    columns: {role: column}; default DATASET_COLUMNS[name]. Rows are keyed by role and pass the
    checks of file rows; a bad row names dataset, split and row number (1-based).
    allow_empty: roles that may be empty (a list, or {split: roles}); default: in a test split
    every role but the first. splits: the (renamed) splits to keep, e.g. ("train", "dev"); default all.
    """
    columns = columns if columns is not None else dataset_columns(name)
    if not columns:
        raise DataError(f"dataset {name!r}: no known columns; give them as columns={{role: column}} "
                        f"(known datasets: {', '.join(sorted(DATASET_COLUMNS))})")
    columns = _checked_columns(columns)
    if _is_local(name):
        raw = _local_hf_folder(name, config_name)
    elif name in PADDLENLP_DATASETS:
        if config_name:
            raise DataError(f"dataset {name!r} is read through paddlenlp and has no config {config_name!r}")
        raw = _paddlenlp_splits(name, data_dir_or_files)
    else:
        raw = _hub_dataset(name, config_name, data_dir_or_files)
    blank_rows_are_breaks = not _is_local(name) and _base_name(name) in LINE_DATASETS
    data = {}
    for split, (original, rows) in _renamed_splits(raw, name, splits).items():
        source = f"{name}/{original}"
        bad = []
        located = ((f"{source}: row {i}", row) for i, row in enumerate(_rows_of(rows), start=1)
                   if not (blank_rows_are_breaks and _is_blank_row(row, columns)))
        examples = _checked_examples(located, columns, _allowed_empty(allow_empty, split, columns),
                                     bad.append if skip_bad_rows else None)
        data[split] = _finish(source, examples, bad, log)
    return data


def _is_blank_row(row, columns):
    return isinstance(row, dict) and all(isinstance(row.get(c), str) and not row[c].strip() for c in columns.values())


def _paddlenlp_file(load_dataset, name, path, split):
    try:
        kwargs = {"splits": split} if split else {}
        return list(load_dataset(name, data_files=path, lazy=False, **kwargs))
    except Exception as e:  # noqa: BLE001 - paddlenlp readers raise whatever the file makes them raise
        raise DataError(f"{path}: could not read it as paddlenlp's {name!r}{f' {split} split' if split else ''} "
                        f"({type(e).__name__}: {e}); local files must be in that dataset's own format") from e


def load_paddlenlp_dataset(name, splits, data_files=None):
    """A named paddlenlp dataset: downloads when online, reads data_files (its own format) otherwise.

    With data_files and splits, file i is read as split i (chnsenticorp's dev and test files have
    other columns than its train file); with data_files alone, each is read as paddlenlp's default.
    """
    from paddlenlp.datasets import load_dataset

    if data_files:
        return [_paddlenlp_file(load_dataset, name, path, split)
                for path, split in zip(data_files, list(splits or ()) + [None] * len(data_files))]
    try:
        return [list(ds) for ds in load_dataset(name, splits=splits, lazy=False)]
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise DataError(
            f"could not load dataset {name!r} through paddlenlp ({type(e).__name__}: {e}); it may need a download. "
            + PADDLENLP_OFFLINE_ADVICE
        ) from e


def truncate(examples, max_samples):
    """HF-style max_*_samples cap; a non-positive cap means all."""
    return examples[:max_samples] if max_samples and max_samples > 0 else examples


# ----------------------------------------------------------------------------
# which data a run reads: the user's, or (only when the user names none) the built-in sample
# ----------------------------------------------------------------------------
SAMPLE_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "datasets")
SPLITS = ("train", "dev", "test")


def split_off(rows, size, seed):
    """Hold out `size` rows, chosen by seed, so a single file can serve as train and dev."""
    if size >= len(rows):
        raise DataError(f"dev_size={size} leaves no training rows (the training data has {len(rows)})")
    order = random_permutation(len(rows), seed)
    held = set(order[:size])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def random_permutation(n, seed):
    import numpy as np

    return np.random.RandomState(seed).permutation(n).tolist()


def data_sources(cfg, sample_files):
    """(where, {split: path}): the files a run reads.

    The built-in sample (sample_files, under datasets/) is used only when the user names no data
    at all; once train_file, dev_file, test_file or dataset_name is given, every split comes from
    what the user gave. User paths stay relative to where the user is; the sample's are absolute,
    so `python path/to/train.py` works from any directory.
    """
    given = {split: cfg[f"{split}_file"] for split in SPLITS if cfg.get(f"{split}_file")}
    if given or cfg.get("dataset_name"):
        return "user", given
    return "sample", {split: os.path.join(SAMPLE_ROOT, path) for split, path in sample_files.items()}


def load_splits(cfg, read_file, sample_files, named_columns=None, log=print):
    """{split: rows} for a trainer, every row checked, with one log line naming the source of every split.

    read_file(split, path) -> rows reads one local file. named_columns ({role: column}) is for
    dataset_name (see load_named_dataset; its local files, when given, are train_file/dev_file/test_file).
    With no dev split, dev_size > 0 holds out that many training rows; with neither there is no
    dev evaluation, and the log says so. do_train=False reads no training split.
    """
    kind, files = data_sources(cfg, sample_files)
    wanted = SPLITS if cfg.get("do_train", True) else ("dev", "test")
    name = cfg.get("dataset_name")
    if name:
        data = load_named_dataset(name, cfg.get("dataset_config_name") or None, files or None, columns=named_columns,
                                  skip_bad_rows=cfg.get("skip_bad_rows", False), log=log)
        data = {split: rows for split, rows in data.items() if split in wanted}
        sources = {split: f"dataset {name}" + (f" ({files[split]})" if split in files else f"/{split}") for split in data}
    else:
        data = {split: read_file(split, path) for split, path in files.items() if split in wanted}
        sources = {split: path + (" (built-in sample)" if kind == "sample" else "") for split, path in files.items()}
    if cfg.get("do_train", True) and "train" not in data:
        raise DataError("no training data: set train_file or dataset_name"
                        + (" (dev_file and test_file alone are for do_train=False)" if data else ""))
    if "dev" not in data and cfg.get("dev_size", 0) > 0 and "train" in data:
        data["train"], data["dev"] = split_off(data["train"], cfg["dev_size"], cfg["seed"])
        sources["dev"] = "the training data, held out (dev_size)"
    if "train" in data:
        data["train"] = truncate(data["train"], cfg.get("max_train_samples", 0))
    for split in ("dev", "test"):
        if split in data:
            data[split] = truncate(data[split], cfg.get("max_eval_samples", 0))
    for split in SPLITS:
        if split in data:
            log(f"data: {split} {len(data[split])} rows from {sources[split]}")
    if "dev" not in data and cfg.get("do_train", True):
        log("data: no dev split (no dev_file, dev_size or dataset dev split): no evaluation during training, "
            "and the final model is the last")
    return data


def load_text_splits(cfg, sample_files, log=print):
    """{split: [text]} for the language-model trainers: one text per row (see load_splits)."""
    column = cfg.get("text_column")
    named = {"text": column if column is not None else (dataset_columns(cfg["dataset_name"]) or {}).get("text", "text")} \
        if cfg.get("dataset_name") else None
    data = load_splits(cfg, lambda split, path: load_texts(path, column, cfg.get("skip_bad_rows", False), 0, log),
                       sample_files, named, log)
    return {split: [r["text"] if isinstance(r, dict) else r for r in rows] for split, rows in data.items()}


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
