"""Reading local data files row by row: JSON, JSON lines, TSV, CSV and TXT.

Every bad row is reported with its file and line, before any training starts. File rules:

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
* CSV/TSV header: declared (``has_header`` True/False) or, with "auto", detected from the
  first row (known column names, or words above a column of numbers); a header-only file
  has no rows and says so.
* Values: text, or numbers (ints as ``"3"``, integral floats too, so ``3.0`` and ``3``
  are one label); null, NaN, infinities, nested objects and lists are bad rows.
* What a path is: only a regular file (or a link to one) is opened, without blocking; a
  directory, FIFO, device or socket is named as such. Text must be UTF-8 (a BOM is fine);
  UTF-16 and GBK files are recognised and named, with the command that converts them.


Imports: the standard library; of the project `errors`.
"""

import codecs
import csv
import itertools
import json
import os
import re
import stat

from paddle_finetune.errors import DataError

SUPPORTED_EXTENSIONS = (".json", ".jsonl", ".tsv", ".csv", ".txt")

# csv's default limit (131072 characters) is below a long document; 2**31 - 1 fits a C long everywhere.
CSV_FIELD_LIMIT = 2**31 - 1

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_TSV_SEPARATOR = re.compile(r"[\t\n]")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")

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


_KINDS = ((stat.S_ISDIR, "a directory, not a data file: give a file inside it (a folder of split files is a dataset_name)"),
          (stat.S_ISFIFO, ("a named pipe (FIFO), not a regular file: it is not read (that would wait for a writer); "
                           "write the data to a file")),
          (stat.S_ISCHR, "a character device, not a data file"),
          (stat.S_ISBLK, "a block device, not a data file"),
          (stat.S_ISSOCK, "a socket, not a data file"))


def _not_a_file(path, mode):
    kind = next((text for test, text in _KINDS if test(mode)), "not a regular file")
    return DataError(f"{path}: is {kind}")


def check_data_file(path):
    """DataError unless path is a regular file (or a link to one), saying what it is instead. Only stats it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.lexists(path):
            raise DataError(f"{path}: is a symbolic link to {os.readlink(path)!r}, which does not exist") from None
        raise DataError(f"data file not found: {path}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        raise _not_a_file(path, mode)


def _read_bytes(path):
    """The file's bytes. Opened without blocking (O_NONBLOCK: a FIFO swapped in after the check does not wait for a
    writer) and checked again on the open descriptor, so only a regular file is ever read."""
    check_data_file(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise _not_a_file(path, mode)
        return f.read()


def _decoded_breaks(sample, codec):
    """Tabs and line breaks in sample decoded as codec (-1 when it does not decode): in the right byte order a
    UTF-16 text's separators come out as themselves; in the wrong one their bytes spell other characters."""
    for end in (len(sample), len(sample) - 2):  # the sample may end inside a surrogate pair
        try:
            text = sample[:end].decode(codec)
        except UnicodeDecodeError:
            continue
        return sum(text.count(c) for c in "\t\n\r")
    return -1


def _utf16_kind(raw):
    """"UTF-16" (with a byte-order mark), "UTF-16LE"/"UTF-16BE" (without one), or None.

    UTF-8 text has no zero bytes, UTF-16 text has one in every ASCII character (tabs, commas, line breaks,
    digits). Without a mark the byte order is the one that decodes the separators, else the side the zeros fall on."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "UTF-16"
    sample = raw[:8192][: len(raw[:8192]) // 2 * 2]
    if len(sample) < 2 or 0 not in sample:
        return None
    breaks = {codec: _decoded_breaks(sample, codec) for codec in ("UTF-16LE", "UTF-16BE")}
    (best, most), (_, other) = sorted(breaks.items(), key=lambda kv: -kv[1])
    if most > 0 and most > other:
        return best
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    for zeros, rest, codec in ((odd, even, "UTF-16LE"), (even, odd, "UTF-16BE")):
        if breaks[codec] >= 0 and zeros and rest * 10 <= zeros:
            return codec
    return None


def _not_utf8(path, line_no, raw_line, error):
    """The error of a line that is not UTF-8, naming GBK when the line reads as GBK (the usual Chinese Windows
    encoding) and otherwise not guessing."""
    try:
        raw_line.decode("gbk")
        encoding, source = "GBK", "GBK"
    except UnicodeDecodeError:
        encoding, source = None, "ITS_ENCODING"
    what = "text is GBK-encoded, not UTF-8" if encoding else "text is not UTF-8"
    return DataError(
        f"{path}:{line_no}: {what} (byte {raw_line[error.start:error.start + 1]!r} at column {error.start + 1}); "
        f"re-encode the file as UTF-8, e.g. `iconv -f {source} -t UTF-8 {os.path.basename(path)} > utf8-{os.path.basename(path)}`"
    )


def _read_lines(path):
    """(lines, bad): the file's lines without BOM and line ends; bad maps the line number of
    every non-UTF-8 line to its DataError. Such lines are kept, decoded with U+FFFD, so the
    tabs, commas and quotes around them still delimit rows and only their row is bad. A
    UTF-16 file is one error for the whole file."""
    raw = _read_bytes(path)
    utf16 = _utf16_kind(raw)
    if utf16:
        name = os.path.basename(path)
        raise DataError(f"{path}: text is {utf16} (what Windows calls \"Unicode\"), not UTF-8; re-encode it, e.g. "
                        f"`iconv -f {utf16} -t UTF-8 {name} > utf8-{name}`, or save it as \"UTF-8\"")
    if raw.startswith(codecs.BOM_UTF8):
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


# Column names a header row of a summarization or classification file usually has (compared case-folded).
KNOWN_COLUMN_NAMES = frozenset({
    "text", "label", "labels", "content", "title", "summary", "source", "target", "document", "article",
    "highlights", "abstract", "sentence", "sentence1", "sentence2", "text_a", "text_b", "text_pair", "review",
    "category", "class", "id", "qid", "query", "question", "answer",
    "文本", "内容", "标题", "摘要", "标签", "类别", "句子",
})
HEADER_VALUES = ("auto", True, False)
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
_HEADER_SAMPLE = 50  # rows after the first that header detection looks at


def is_number_text(text):
    """Whether text reads as a finite decimal number ("3", "3.0", "-1e2"; not "nan", "1_000" or "")."""
    return bool(_NUMBER.fullmatch(text))


def header_evidence(first, rest):
    """Why the fields `first` look like a header above the rows `rest` (lists of fields), or None: a field that is
    a known column name, or a word above a column whose every value below is a number (labels 0/1 under
    "sentiment")."""
    known = [f.strip() for f in first if f.strip().casefold() in KNOWN_COLUMN_NAMES]
    if known:
        return f"known column name(s) {', '.join(repr(k) for k in known)}"
    for j, value in enumerate(first):
        below = [row[j] for row in rest if len(row) == len(first)]
        if len(below) >= 2 and value.strip() and not is_number_text(value) and all(is_number_text(v) for v in below):
            return f"{value.strip()!r} stands above a column of numbers"
    return None


def _header_decision(path, head, has_header, note):
    """Whether the first record of `head` (the file's first records) is a header, per has_header; the
    decision, and a first row that looks like one but is read as a row, go to note()."""
    valid = [(first, fields) for first, last, fields, error in head if error is None]
    if not valid:
        return bool(has_header is True)
    line, fields = valid[0]
    evidence = header_evidence(fields, [f for _, f in valid[1:]])
    if has_header == "auto":
        if evidence and note:
            note(f"{path}: line {line} read as a header ({evidence}); set has_header=False if it is a row")
        return bool(evidence)
    if not has_header and evidence and note:
        note(f"WARNING: {path}:{line}: the first row looks like a header ({evidence}) but has_header=False reads it "
             "as a row; set has_header=True (or auto) if it is one")
    return bool(has_header)


def _delimited_rows(path, lines, bad_lines, delimiter, has_header, on_error=None, note=None):
    """Rows of a CSV/TSV file: dicts by header name, or lists (no header). has_header: True, False or "auto"."""
    records = _tsv_records(lines) if delimiter == "\t" else _csv_records(lines)
    records = ((first, last, fields, error) for first, last, fields, error in records
               if not (first == last and not lines[first - 1].strip()))  # a blank line is no row
    head = []
    for record in records:
        head.append(record)
        if len(head) > _HEADER_SAMPLE:
            break
    has_header = _header_decision(path, head, has_header, note)
    header, expected, header_line, rows = None, None, None, 0
    for first, last, fields, error in itertools.chain(head, records):
        utf8_error = _first_bad_line(bad_lines, first, last)
        if has_header and header is None:
            # The header is not a row that can be skipped: every row depends on it.
            if utf8_error is not None:
                raise utf8_error
            if error is not None:
                raise DataError(f"{path}:{first}: header: {error}")
            header, header_line = _header_names(path, first, fields), first
            expected = (len(header), f"the header (line {first})")
            continue
        rows += 1
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
    if header is not None and not rows:
        raise DataError(f"{path}: no rows, only a header (line {header_line}: {', '.join(header)})")


def _txt_rows(path, lines, bad_lines, on_error=None):
    for line_no, text in enumerate(lines, start=1):
        if line_no in bad_lines:
            _bad(bad_lines[line_no], on_error)
        elif text.strip():
            yield line_no, [text]


def iter_rows(path, has_header, on_error=None, note=None):
    """Yield (line_no, row) where row is a dict (named columns) or a list (columns by index).

    has_header (CSV/TSV): True, False or "auto" (detected from the first rows; note() hears the decision).
    line_no is the row's first line; for a JSON document it reads "LINE (item N)". A row that
    cannot be decoded or parsed raises DataError, or with on_error set is passed to it and
    skipped. A path that is not a regular file, an empty or missing file, a header without
    rows, a bad header and a broken JSON document always raise.
    """
    check_data_file(path)
    fmt = _file_format(path)
    lines, bad_lines = _read_lines(path)
    if fmt == "json":
        yield from _json_rows(path, lines, bad_lines, on_error)
    elif fmt == "jsonl":
        yield from _jsonl_rows(path, lines, bad_lines, on_error)
    elif fmt == "txt":
        yield from _txt_rows(path, lines, bad_lines, on_error)
    else:
        yield from _delimited_rows(path, lines, bad_lines, "\t" if fmt == "tsv" else ",", has_header, on_error, note)
