"""Ownership: what paddle-finetune wrote in a directory, and the one rule built on it:

    a path may be written over or removed only if this run, or an earlier run of this toolkit, wrote it.

Every tool that writes into a directory records each top-level file and folder it creates there, *before*
creating it, in the directory's ownership record MANIFEST_FILE (JSON, replaced atomically): a run's output_dir
(checkpoints, logs, the final model, wandb/, visualdl/, initial_model/, ...), a prediction tool's --output
(with its size and sha256, so an edited file is no longer "ours"), the converter's DST. A folder recorded there
is the tool's with everything in it. Removing an earlier run's files (overwrite_output_dir) removes exactly the
recorded entries that still have the kind recorded (a recorded folder that became a symlink is not ours).

Directories written by the previous version have no record. One is recognised as an earlier run's output_dir
(`legacy`) when it holds a readable train_config.json and a trainer_state.json or a checkpoint-<step> folder with
its CHECKPOINT_COMPLETE; then the names that version wrote (LEGACY_*: its logs, results, final model and
tokenizer files, checkpoints, dashboards) are adopted as ours, and everything else is foreign.

Transient names (the run lock, temp files and folders of an interrupted write) count as ours only in a directory
that is ours; they are removed at the next start.

Refusals (ConfigError, one line, nothing touched) come from:
  protected_reason   `/`, the home directory (or an ancestor), the current directory or an ancestor, the project
  overlap            two paths that are the same, or one inside the other (real paths: symlinks resolved)
  check_destination  the rule for tools that write a directory from inputs (converter, exporters)
  check_output_file  the rule for a tool that writes one file (prediction --output)

Imports: the standard library; of the project `errors`, `paths` and `checkpoints.files`.
"""
import contextlib
import dataclasses
import json
import os
import re
import stat
import time
from typing import Dict, List, Optional

from paddle_finetune.checkpoints.files import (
    file_digest,
    CHECKPOINT_PREFIX,
    COMPLETE_MARKER,
    LOCK_FILE,
    SHARING_CHECK_PREFIX,
    TRAIN_CONFIG_FILE,
    TRAINER_STATE_FILE,
    read_json_file,
)
from paddle_finetune.errors import CheckpointError, ConfigError
from paddle_finetune.paths import PROJECT_ROOT

MANIFEST_FILE = ".paddle_finetune_owned.json"
MANIFEST_FORMAT = 1
MAX_MANIFEST_BYTES = 16 << 20
SHOWN = 5  # foreign names listed in a refusal

# Names that are ours while the directory is ours: written and removed by one operation, left by a crash.
_TRANSIENT = re.compile(
    r"(?:\.lock|\.paddle_finetune_owned\.json\.tmp\d*"
    rf"|\.tmp-{CHECKPOINT_PREFIX}\d+-\d+|\.tmp-final-\d+|{CHECKPOINT_PREFIX}\d+\.old-\d+"
    rf"|\.write-test-.+|{re.escape(SHARING_CHECK_PREFIX)}.+|\.tmp-rng-.+|\.hf_to_paddle-stage-.+)"
)
_TEMP_OF = re.compile(r"(?P<base>.+)\.tmp\d*")  # "<owned name>.tmp<pid>": write_json_atomic and friends

# What the previous version wrote at the root of an output_dir (for output_dirs without a record).
LEGACY_FILES = frozenset({
    TRAIN_CONFIG_FILE, TRAINER_STATE_FILE, "run.log", "train_log.jsonl", "metrics.jsonl", "all_results.json",
    "train_results.json", "eval_results.json", "test_results.json", "predict_results.json", "training_curves.png",
    "sample_generation.json", "cloze_check.json", "label_map.json", "config.json", "model_config.json",
    "generation_config.json", "model.safetensors", "model.safetensors.index.json", "model_state.pdparams",
    "vocab.txt", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "sentencepiece.bpe.model", "spiece.model", "chat_template.json",
})
LEGACY_FILE_PATTERN = re.compile(r"predictions_\w+\.jsonl|classification_report[\w.-]*\.json|confusion_matrix[\w.-]*\.tsv"
                                 r"|model-\d{5}-of-\d{5}\.safetensors")
LEGACY_DIRS = frozenset({"wandb", "visualdl", "initial_model"})


# ----------------------------------------------------------------------------
# paths: real paths, protected places, overlap
# ----------------------------------------------------------------------------
def real(path):
    """The real path (user expanded, symlinks resolved, also of a path that does not exist yet)."""
    return os.path.realpath(os.path.abspath(os.path.expanduser(str(path))))


def _is_within(inner, outer):
    """Both real: inner is outer or below it."""
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def overlap(path, other):
    """How `path` relates to `other` (real paths): "is", "is inside", "contains", or None."""
    a, b = real(path), real(other)
    if a == b:
        return "is"
    if _is_within(a, b):
        return "is inside"
    if _is_within(b, a):
        return "contains"
    return None


def protected_reason(path):
    """Why a tool must never write (or clear) this directory, or None: the filesystem root, the home directory or
    one holding it, the current directory or one holding it, the project's own folder or one holding it."""
    p = real(path)
    if p == os.sep:
        return "the filesystem root"
    home = real("~")
    if home != os.sep and _is_within(home, p):
        return "your home directory" if p == home else f"a folder holding your home directory ({home})"
    cwd = real(os.getcwd())
    if _is_within(cwd, p):
        return "the current directory" if p == cwd else f"a folder holding the current directory ({cwd})"
    project = real(PROJECT_ROOT)
    if _is_within(project, p):
        return "paddle-finetune's own project folder" if p == project else f"a folder holding paddle-finetune's project ({project})"
    return None


# ----------------------------------------------------------------------------
# the record: reading, writing (atomic, under a lock on the directory), adding and forgetting entries
# ----------------------------------------------------------------------------
def _kind(path):
    """"file", "dir", "link" or "other" (FIFO, socket, device) by lstat; None when absent."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # a/file/out: nothing there either
        return None
    if stat.S_ISLNK(st.st_mode):
        return "link"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def _valid_name(name):
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\0" not in name


def read_manifest(directory):
    """The directory's ownership record: None when it has none; ConfigError when it is there but unreadable
    (then nothing in the directory can be proven ours)."""
    path = os.path.join(directory, MANIFEST_FILE)
    if _kind(path) is None:
        return None
    try:
        record = read_json_file(path, max_bytes=MAX_MANIFEST_BYTES)
    except CheckpointError as e:
        raise ConfigError(f"{e} (the record of what paddle-finetune wrote there)") from None
    entries = record.get("entries") if isinstance(record, dict) else None
    if not isinstance(record, dict) or record.get("format") != MANIFEST_FORMAT or not isinstance(entries, dict) \
            or not all(_valid_name(n) and isinstance(e, dict) and e.get("kind") in ("file", "dir") for n, e in entries.items()):
        raise ConfigError(f"{path}: not a format {MANIFEST_FORMAT} ownership record (the record of what paddle-finetune "
                          "wrote there)")
    record.setdefault("runs", [])
    return record


def _new_manifest():
    return {"format": MANIFEST_FORMAT,
            "about": "The files and folders paddle-finetune wrote in this directory; it removes or replaces only these.",
            "entries": {}, "runs": []}


def _write_manifest(directory, record):
    path = os.path.join(directory, MANIFEST_FILE)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, ensure_ascii=False, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(directory):
    """An flock on the directory itself while its record is read, changed and written (no extra file)."""
    import fcntl

    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):  # a filesystem without flock: one writer per directory anyway (the run lock)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def update_manifest(directory, change):
    """Apply change(record) to the directory's record under its lock and write it back atomically."""
    with _locked(directory):
        record = read_manifest(directory) or _new_manifest()
        change(record)
        _write_manifest(directory, record)
        return record


def record_entries(directory, entries, **meta):
    """Record {name: kind} as written by this toolkit, before they are written (a crash leaves no unrecorded file)."""
    def add(record):
        for name, kind in entries.items():
            if not _valid_name(name):
                raise ValueError(f"not a name in {directory}: {name!r}")
            record["entries"][name] = {"kind": kind, **meta}
    return update_manifest(directory, add)


def forget_entries(directory, names):
    """Drop names from the record (after they were removed)."""
    def drop(record):
        for name in names:
            record["entries"].pop(name, None)
    if names and _kind(os.path.join(directory, MANIFEST_FILE)) is not None:
        update_manifest(directory, drop)


# ----------------------------------------------------------------------------
# what a directory holds: ours, transient, foreign
# ----------------------------------------------------------------------------
@dataclasses.dataclass
class Inventory:
    """A directory's top-level entries sorted by who wrote them. `owned` maps name -> kind."""

    path: str
    exists: bool = False
    owned: Dict[str, str] = dataclasses.field(default_factory=dict)
    transient: List[str] = dataclasses.field(default_factory=list)
    foreign: List[str] = dataclasses.field(default_factory=list)
    manifest: Optional[dict] = None
    legacy: bool = False

    @property
    def empty(self):
        """Nothing but transient leftovers of ours (or nothing at all)."""
        return not self.owned and not self.foreign

    def shown_foreign(self):
        names = [n + ("/" if _kind(os.path.join(self.path, n)) == "dir" else "") for n in self.foreign[:SHOWN]]
        more = len(self.foreign) - SHOWN
        return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def _is_checkpoint_dir(path):
    return _kind(path) == "dir" and _kind(os.path.join(path, COMPLETE_MARKER)) == "file"


def _legacy_output_dir(directory, names):
    """An output_dir written before runs kept a record: a readable train_config.json, and a trainer_state.json or
    a complete checkpoint."""
    if TRAIN_CONFIG_FILE not in names or _kind(os.path.join(directory, TRAIN_CONFIG_FILE)) != "file":
        return False
    try:
        if not isinstance(read_json_file(os.path.join(directory, TRAIN_CONFIG_FILE), max_bytes=1 << 22), dict):
            return False
    except CheckpointError:
        return False
    if _kind(os.path.join(directory, TRAINER_STATE_FILE)) == "file":
        return True
    return any(n.startswith(CHECKPOINT_PREFIX) and _is_checkpoint_dir(os.path.join(directory, n)) for n in names)


def _legacy_kind(directory, name):
    """The kind the previous version wrote under this name, when it wrote that name and it has that kind."""
    kind = _kind(os.path.join(directory, name))
    if kind == "file" and (name in LEGACY_FILES or LEGACY_FILE_PATTERN.fullmatch(name)):
        return "file"
    if kind == "dir" and (name in LEGACY_DIRS or (re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", name)
                                                  and _is_checkpoint_dir(os.path.join(directory, name)))):
        return "dir"
    return None


def inventory(directory):
    """Sort the entries of `directory`: recorded (or, without a record, adopted from an earlier version's output_dir)
    with the kind they still have, transient leftovers of ours, and foreign (no run of this toolkit wrote them)."""
    inv = Inventory(path=directory)
    if _kind(directory) is None:
        return inv
    try:
        names = sorted(os.listdir(directory))
    except NotADirectoryError:
        raise ConfigError(f"{directory} exists and is not a directory") from None
    except OSError as e:
        raise ConfigError(f"{directory}: cannot list it ({e.strerror})") from None
    inv.exists = True
    inv.manifest = read_manifest(directory)
    recorded = (inv.manifest or {}).get("entries", {})
    inv.legacy = inv.manifest is None and _legacy_output_dir(directory, names)
    for name in names:
        if name == MANIFEST_FILE:
            continue
        if name in recorded:
            kind = _kind(os.path.join(directory, name))
            if kind == recorded[name]["kind"]:
                inv.owned[name] = kind
            else:
                inv.foreign.append(name)  # replaced since (a symlink, a file where a folder was): not ours any more
        elif inv.legacy and _legacy_kind(directory, name):
            inv.owned[name] = _legacy_kind(directory, name)
        elif _TRANSIENT.fullmatch(name):
            inv.transient.append(name)
        else:
            inv.foreign.append(name)
    ours = set(inv.owned)
    for name in list(inv.foreign):  # "<owned>.tmp<pid>": an atomic write a crash interrupted
        m = _TEMP_OF.fullmatch(name)
        if m and m.group("base") in ours and _kind(os.path.join(directory, name)) == "file":
            inv.foreign.remove(name)
            inv.transient.append(name)
    if inv.manifest is None and not inv.legacy:  # leftovers count as ours only in a directory that is ours
        inv.foreign = sorted(inv.foreign + [n for n in inv.transient if n != LOCK_FILE])
        inv.transient = [n for n in inv.transient if n == LOCK_FILE]  # the claim's own lock
    return inv


def remove_path(path):
    """Remove one entry without following a symlink out of it."""
    import shutil

    if _kind(path) == "dir":
        shutil.rmtree(path)
    elif _kind(path) is not None:
        os.remove(path)


def clean_transient(directory, owned=()):
    """Remove the leftovers of interrupted writes in a directory that is ours: temp folders and files of every kind
    (.tmp-checkpoint-*, .tmp-final-*, checkpoint-*.old-*, "<owned>.tmp<pid>", ...), never the run lock.
    Returns the names removed."""
    removed = []
    owned = set(owned)
    for name in sorted(os.listdir(directory)) if _kind(directory) == "dir" else []:
        m = _TEMP_OF.fullmatch(name)
        if name == LOCK_FILE or not (_TRANSIENT.fullmatch(name) or (m and m.group("base") in owned)):
            continue
        try:
            remove_path(os.path.join(directory, name))
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


def remove_owned(inv, keep=()):
    """Remove exactly the owned entries of an inventory (never a foreign one), forget them in the record.
    Returns the names removed."""
    removed = []
    for name, kind in sorted(inv.owned.items()):
        path = os.path.join(inv.path, name)
        if name in keep or _kind(path) != kind:
            continue
        remove_path(path)
        removed.append(name)
    forget_entries(inv.path, removed)
    return removed


def recorded_names(directory):
    """The names the directory's record says this toolkit wrote; None when it has no (readable) record."""
    try:
        record = read_manifest(directory)
    except ConfigError:
        return set()
    return None if record is None else set(record["entries"])


def describe_names(names, limit=SHOWN):
    names = sorted(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ----------------------------------------------------------------------------
# a run's record: every top-level entry it writes into its output_dir, recorded before the write
# ----------------------------------------------------------------------------
class RunRecorder:
    """Installed as the run's write hook (runtime.state.note_write) once output_dir opens: a path about to be
    written inside output_dir has its top-level entry recorded (one record update per new name)."""

    def __init__(self, directory, tool, run_id):
        self.directory = os.path.abspath(directory)
        self.real_directory = real(directory)
        self.tool, self.run_id = tool, run_id
        record = read_manifest(directory) or {}
        self.known = set(record.get("entries", {}))

    def top_level(self, path):
        """(name, is_inside_a_folder) of path's top-level entry in output_dir; None when path is elsewhere."""
        for base, candidate in ((self.directory, os.path.abspath(path)),
                                (self.real_directory, os.path.join(real(os.path.dirname(os.path.abspath(path))),
                                                                   os.path.basename(path)))):
            rel = os.path.relpath(candidate, base)
            if rel != "." and not rel.startswith(".." + os.sep) and rel != "..":
                parts = rel.split(os.sep)
                return parts[0], len(parts) > 1
        return None

    def __call__(self, path, kind="file"):
        found = self.top_level(path)
        if found is None:
            return
        name, nested = found
        if name in self.known or name == MANIFEST_FILE or _TRANSIENT.fullmatch(name):
            return
        m = _TEMP_OF.fullmatch(name)
        if m and m.group("base") in self.known:
            return
        record_entries(self.directory, {name: "dir" if nested else kind}, tool=self.tool, run=self.run_id)
        self.known.add(name)

    def forget(self, path):
        found = self.top_level(path)
        if found and not found[1]:
            forget_entries(self.directory, [found[0]])
            self.known.discard(found[0])


def new_run_id():
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"


def begin_run_record(directory, tool, run_id, adopted=(), resumed_from=None, removed=()):
    """The run's entry in the record (written once output_dir opens): which tool, when, what it adopted from an
    earlier version's output_dir, where it resumed from, what of an earlier run it removed."""
    def add(record):
        for name, kind in adopted:
            record["entries"].setdefault(name, {"kind": kind, "tool": "paddle-finetune (before records)", "run": "legacy"})
        run = {"id": run_id, "tool": tool, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        if resumed_from:
            run["resumed_from"] = resumed_from
        if removed:
            run["removed_earlier_run"] = sorted(removed)
        record["runs"] = (record.get("runs") or [])[-50:] + [run]
    return update_manifest(directory, add)


# ----------------------------------------------------------------------------
# tools that write a directory or a file from inputs
# ----------------------------------------------------------------------------
def check_destination(dst, *, tool, source, inputs=(), what="DST_DIR", earlier=None, replaceable=True):
    """The rule for a tool that writes the directory `dst` from inputs (the converter; the exporters): dst may be
    written only when it is absent or empty, or when it is an earlier output of the same `tool` from the same
    `source` (real paths compared) and holds nothing else. It is never a protected place (protected_reason), never
    one of the inputs (`source` and `inputs`: SRC, a tokenizer dir, ...), nor inside one, nor holding one.

    earlier(dst) -> {name, ...} or None: another way to recognise an earlier output (e.g. the converter's own
    marker from before records were kept): the names it wrote, when it was made by `tool` from `source`.

    replaceable=False (the exporters, which publish by one rename into an absent or empty directory): any
    non-empty dst is refused, earlier output or not.

    Returns the names an earlier output of the same tool left there (the new output may replace or remove them).
    Raises ConfigError, in one line, naming what is wrong; nothing is touched.
    """
    reason = protected_reason(dst)
    if reason:
        raise ConfigError(f"{what} {dst} is {reason}: pick a new or empty directory")
    for label, path in [("the source", source), *inputs]:
        if path is None:
            continue
        how = overlap(dst, path)
        if how:
            raise ConfigError(f"{what} {dst} {how} {label} {path}" + (f" (real path {real(dst)})" if how == "is" and real(dst) != os.path.abspath(dst) else "")
                              + f": {tool} never writes over its input; pick another {what}")
    kind = _kind(real(dst)) if _kind(dst) == "link" else _kind(dst)
    if kind is None:
        return set()
    if kind != "dir":
        raise ConfigError(f"{what} {dst} exists and is not a directory")
    directory = real(dst)
    names = [n for n in os.listdir(directory) if not _TRANSIENT.fullmatch(n)]
    if not names:
        return set()
    if not replaceable:
        raise ConfigError(f"{what} {dst} is not empty ({describe_names(sorted(names))}); {tool} never writes over "
                          f"files, nothing was changed: give a new or empty {what}")
    record = read_manifest(directory)
    ours = set()
    if record is not None:
        ours = {n for n, e in record["entries"].items()
                if e.get("tool") == tool and e.get("source") == real(source) and _kind(os.path.join(directory, n)) == e["kind"]}
    elif earlier is not None:
        ours = set(earlier(directory) or ())
    others = sorted(set(names) - ours - {MANIFEST_FILE})
    if not ours or others:
        shown = describe_names(others or names)
        raise ConfigError(f"{what} {dst} is not empty and is not an earlier {tool} output of {source} ({shown}); "
                          f"nothing was changed: pick a new or empty {what}")
    return ours


def is_earlier_output(path, tool):
    """True when `path` is a file `tool` wrote and that has not changed since (size and sha256 in its record)."""
    directory, name = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    try:
        entry = (read_manifest(directory) or {}).get("entries", {}).get(name)
    except ConfigError:
        return False
    if not entry or entry.get("tool") != tool or entry.get("kind") != "file" or _kind(path) != "file":
        return False
    return file_digest(path) == {"size": entry.get("size"), "sha256": entry.get("sha256")}


def check_output_file(path, *, tool, inputs=(), overwrite=False, flag="--output"):
    """The rule for a tool that writes one file (a prediction --output, its metrics file): never one of the inputs
    ((label, path): the input file, the model's files; real paths compared), nor inside an input directory; an
    existing file is replaced only when it is an earlier output of the same tool, unchanged since
    (is_earlier_output), or with overwrite=True. Raises ConfigError in one line; nothing is touched."""
    if not path:
        return
    if _kind(path) == "dir" or (_kind(path) == "link" and os.path.isdir(path)):
        raise ConfigError(f"{flag} {path} is a directory; give a file name")
    for label, other in inputs:
        if other is None or not os.path.exists(other):
            continue
        how = overlap(path, other)
        if how in ("is", "is inside"):
            raise ConfigError(f"{flag} {path} {how} {label} {other}: {tool} never writes over its input; "
                              f"give another {flag}")
    kind = _kind(path)
    if kind is None:
        return
    if kind not in ("file", "link"):
        raise ConfigError(f"{flag} {path} exists and is not a regular file")
    if kind == "link":
        raise ConfigError(f"{flag} {path} is a symlink; give the file itself or another name")
    if not overwrite and not is_earlier_output(path, tool):
        raise ConfigError(f"{flag} {path} exists and is not an unchanged earlier output of {tool}; give another "
                          f"{flag}, or pass --overwrite to replace it")


def record_output_file(path, *, tool, **meta):
    """Record a file the tool has just written (its size and sha256), so a later run may replace it."""
    directory = os.path.dirname(os.path.abspath(path))
    record_entries(directory, {os.path.basename(path): "file"}, tool=tool, **file_digest(path), **meta)


def forget_output_file(path):
    forget_entries(os.path.dirname(os.path.abspath(path)), [os.path.basename(path)])
