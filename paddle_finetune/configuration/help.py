"""--help, generated from the trainer's source so it cannot drift from CONFIG: every key with its default
and the comment written beside it, grouped by the `# --- section ---` lines.

Imports: the standard library only.
"""
import ast
import io
import re
import tokenize
from typing import Dict, List

# ----------------------------------------------------------------------------
# --help, generated from the trainer's source so it cannot drift from CONFIG
# ----------------------------------------------------------------------------
SECTION_RE = re.compile(r"^#\s*---\s*(.+?)\s*---\s*$")
HELP_WIDTH = 100


def _dict_node_keys(node):
    """[(key, line)] of a `dict(key=...)` call or a `{"key": ...}` literal, else None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return [(kw.arg, kw.lineno) for kw in node.keywords if kw.arg]
    if isinstance(node, ast.Dict):
        return [(k.value, k.lineno) for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    return None


def _comments_by_line(text):
    """{line: (comment text without '#', whole_line)}."""
    comments = {}
    lines = text.splitlines()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                line, col = tok.start
                comments[line] = (tok.string, not lines[line - 1][:col].strip())
    except (tokenize.TokenError, SyntaxError):
        pass
    return comments


def config_comments(source_path, keys):
    """{key: (section, comment)} for the top-level dict in source_path that defines most of `keys`.

    The comment is the `# ...` beside the key, else the comment line(s) directly above it; the
    section is the last `# --- name ---` header above the key. Comments inside a multi-line value
    (model_config's inner keys) are skipped.
    """
    try:
        with open(source_path, encoding="utf-8") as f:
            text = f.read()
        tree = ast.parse(text)
    except (OSError, SyntaxError, ValueError):
        return {}
    best, wanted = None, set(keys)
    for node in tree.body:
        if isinstance(node, ast.Assign):
            found = _dict_node_keys(node.value)
            if found and (best is None or len(wanted & {k for k, _ in found}) > len(wanted & {k for k, _ in best[1]})):
                best = (node, found)
    if best is None:
        return {}
    node, found = best
    comments = _comments_by_line(text)
    headers = sorted((line, SECTION_RE.match(c).group(1)) for line, (c, whole) in comments.items()
                     if whole and SECTION_RE.match(c) and node.lineno <= line <= node.end_lineno)
    def plain_comment_line(n):  # a whole-line comment that is not a section header
        return n in comments and comments[n][1] and not SECTION_RE.match(comments[n][0])

    result = {}
    for key, line in found:
        if line in comments and not comments[line][1]:
            parts = [comments[line][0]]
        else:  # no comment beside the key: the comment lines directly above it (line_by_line in train_mlm.py)
            first = line
            while plain_comment_line(first - 1):
                first -= 1
            parts = [comments[n][0] for n in range(first, line)]
        section = next((name for header_line, name in reversed(headers) if header_line < line), "")
        result[key] = (section, " ".join(p.lstrip("#").strip() for p in parts))
    return result


def _wrap(words, width, indent):
    """Greedy line filling of pre-cut pieces (words of a comment, items of a dict)."""
    lines, line = [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = indent + word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line] if line else lines


def compact_repr(value, first, width=HELP_WIDTH, indent=" " * 8):
    """`first` + repr(value) on as few lines as fit: a dict breaks between items, never inside one."""
    if isinstance(value, dict) and len(first) + len(repr(value)) > width:
        items = [f"{k!r}: {v!r}," for k, v in value.items()]
        items[0], items[-1] = "{" + items[0], items[-1][:-1] + "}"
        return _wrap([first + items[0]] + items[1:], width, indent)
    return [first + repr(value)]


def format_help(defaults, prog, doc, source=None):
    """Every key of `defaults` with its default, grouped under the CONFIG's section headers, each with
    the comment it has in `source` (the trainer's file)."""
    comments = config_comments(source, list(defaults)) if source else {}
    lines = [f"usage: python {prog} [--config FILE] [--key=value ...]", ""]
    if doc:  # the trainer's docstring, without its note for developers on what it imports
        lines += ["\n\n".join(p for p in doc.strip().split("\n\n") if not p.startswith("Imports:")), ""]
    lines += [
        "--config FILE   a .yaml, .py or .json file (looked up in configs/ too) that sets some keys;",
        "                a .py file is run as Python (use only files you trust); its '_' names are helpers",
        "--key=value     a Python literal, checked against the type of the default",
        "--key           alone, for a True/False key: True (--do_train)",
        "a dict (model_config) given in part updates only the keys it names",
    ]
    sections: Dict[str, List[str]] = {}
    for key in defaults:
        sections.setdefault(comments.get(key, ("",))[0] or "keys", []).append(key)
    column = 38  # comments start here when the key and its default fit before it
    for section, keys in sections.items():
        lines += ["", f"{section}:"]
        for key in keys:
            comment = comments.get(key, ("", ""))[1]
            head = compact_repr(defaults[key], f"  --{key}=")
            if comment and len(head) == 1 and len(head[0]) < column - 1:
                text = _wrap(comment.split(), HELP_WIDTH - column, "")
                lines += [head[0].ljust(column) + text[0]] + [" " * column + t for t in text[1:]]
            else:
                lines += head
                if comment:
                    lines += [" " * 6 + t for t in _wrap(comment.split(), HELP_WIDTH - 6, "")]
    return "\n".join(lines)
