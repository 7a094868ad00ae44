"""Rows into examples: the columns a trainer asked for (by name or 0-based index), each value checked
(text, or numbers as text: ints as "3", integral floats too, so 3.0 and 3 are one label; null, NaN,
infinities, nested objects and lists are bad rows), bad rows stopped at or skipped and counted.

Imports: the standard library; of the project `errors` and `data.readers`.
"""
import math
import numbers
import os
import re

from paddle_finetune.data.readers import _bad, _where, iter_rows
from paddle_finetune.errors import DataError

_INDEX = re.compile(r"\s*-?[0-9]+\s*")

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


def header_setting(has_header, columns, path):
    """True, False or "auto" for reading a CSV/TSV file with these columns: names need a header (a declared
    has_header=False with a name is refused); indexes select columns of a file with or without one."""
    names = [c for c in columns.values() if isinstance(c, str)]
    delimited = os.path.splitext(path)[1].lower() in (".csv", ".tsv")  # JSON keys are names with or without it
    if names and has_header is False and delimited:
        raise DataError(f"{path}: column {names[0]!r} is a name, but has_header=False says the file has no header; "
                        "give the columns by 0-based index, or set has_header=True (or auto)")
    return True if names else has_header


def read_examples(path, columns, skip_bad_rows=False, allow_empty=(), log=print, has_header="auto"):
    """Read a local file into a list of dicts keyed by the given column *roles*.

    columns: {role: column}, e.g. {"source": "content", "target": 2}. A column is a name
    (files with a header, JSON objects) or a 0-based index (any TSV/CSV, TXT; in a file
    with a header, indexes count its columns and the header is not a row). has_header:
    True, False or "auto" (detected, and logged, for CSV/TSV files; names imply True).
    Bad rows raise DataError naming file and line, or are skipped and counted when
    skip_bad_rows is set. Roles in allow_empty may be empty strings (never null or NaN).
    """
    columns = _checked_columns(columns)
    header = header_setting(has_header, columns, path)
    bad = []
    on_error = bad.append if skip_bad_rows else None
    located = ((_where(path, line_no), row) for line_no, row in iter_rows(path, header, on_error, note=log))
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
