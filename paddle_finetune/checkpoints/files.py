"""The checkpoint format on disk: file names, bytes written and fsynced, the CHECKPOINT_COMPLETE manifest
(size and sha256 of every file, written last), and a reader that checks every file it reads against it.

Imports: the standard library and numpy; safetensors inside; of the project `errors`.
"""
import hashlib
import json
import os
import posixpath
import re
import stat

import numpy as np

from paddle_finetune.errors import CheckpointError

FORMAT = 2  # 1 = the pickled format (.pdparams/.pdopt/trainer_state.pdparams), refused on resume
CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "CHECKPOINT_COMPLETE"  # JSON manifest; its presence makes a checkpoint visible
SAFE_WEIGHTS_FILE = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"
PICKLED_WEIGHTS_FILE = "model_state.pdparams"
OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_META_FILE = "optimizer.json"
TRAINER_STATE_FILE = "trainer_state.json"  # in a checkpoint: the full state; at output_dir's root: step and best
TRAIN_CONFIG_FILE = "train_config.json"
RANK_RNG_FILE = "rng_state_rank{rank}.json"  # ranks > 0; rank 0's RNG is in TRAINER_STATE_FILE
SHARING_CHECK_PREFIX = ".fs-check-"  # multinode.py's start-up files: does this rank see that rank's output_dir?
OLD_FORMAT_FILES = ("trainer_state.pdparams", "optimizer.pdopt")
LOCK_FILE = ".lock"

# Sane magnitudes for what a checkpoint records: anything beyond is damage, not a run.
MAX_STEP = 10**12
MAX_WORLD_SIZE = 1 << 16
MAX_JSON_DEPTH = 64  # a JSON file nested deeper than this is refused before it is parsed (no RecursionError)
MAX_JSON_BYTES = 1 << 30  # a JSON file of a checkpoint or model directory
MAX_MANIFEST_FILES = 100_000
MAX_FILE_SIZE = 1 << 50

# ----------------------------------------------------------------------------
# files: bytes in, bytes out, every write fsynced
# ----------------------------------------------------------------------------
def _one_line(e):
    """A foreign exception's text for our one-line errors (paddlenlp's and pickle's can span lines)."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def _json_default(obj):
    if isinstance(obj, np.generic):  # a numpy scalar that slipped into a state is still a plain number
        return obj.item()
    raise TypeError(f"not JSON data: {type(obj).__name__}")


def _json_bytes(obj):
    return json.dumps(obj, ensure_ascii=False, indent=1, default=_json_default).encode("utf-8")


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def json_depth(data):
    """The deepest nesting of [ and { in JSON bytes (strings skipped): checked before json parses them."""
    import numpy as np

    bare = np.frombuffer(_JSON_STRING.sub(b"", data), dtype=np.uint8)
    if not bare.size:
        return 0
    steps = np.isin(bare, (ord("["), ord("{"))).astype(np.int64) - np.isin(bare, (ord("]"), ord("}"))).astype(np.int64)
    return int(np.cumsum(steps).max(initial=0))


def _parse_json(where, data, max_depth=MAX_JSON_DEPTH):
    try:
        if json_depth(data) > max_depth:
            raise CheckpointError(f"{where}: JSON nested deeper than {max_depth} levels (corrupted or crafted)")
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{where}: not UTF-8 text (corrupted?)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{where}: bad JSON at line {e.lineno} ({e.msg}); truncated or corrupted") from None
    except RecursionError:
        raise CheckpointError(f"{where}: JSON nested too deeply (corrupted or crafted)") from None


def _kind_name(mode):
    for test, name in ((stat.S_ISLNK, "symlink"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "device"), (stat.S_ISBLK, "device")):
        if test(mode):
            return name
    return "special file"


def open_regular(path):
    """A binary file object for `path` when it is a regular file, else CheckpointError: a FIFO is never waited on
    (opened non-blocking, then refused), a symlink never followed (O_NOFOLLOW), a directory never read."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except OSError as e:
        raise CheckpointError(f"{path}: unreadable ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path}: not a regular file (a {_kind_name(st.st_mode)})")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except OSError as e:
        raise CheckpointError(f"{path}: unreadable ({e.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # replaced between the lstat and the open
        os.close(fd)
        raise CheckpointError(f"{path}: not a regular file (a {_kind_name(st.st_mode)})")
    return os.fdopen(fd, "rb")


def read_regular(path, max_bytes=None):
    """The bytes of a regular file (open_regular), refusing one larger than max_bytes before reading it."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise CheckpointError(f"{path}: {size} bytes, more than the {max_bytes} such a file may have")
        try:
            return f.read(-1 if max_bytes is None else max_bytes + 1)
        except OSError as e:
            raise CheckpointError(f"{path}: unreadable ({e.strerror})") from None


def read_json_file(path, max_bytes=MAX_JSON_BYTES, max_depth=MAX_JSON_DEPTH):
    """A JSON file read defensively (a regular file, bounded size and nesting); CheckpointError names the file."""
    return _parse_json(path, read_regular(path, max_bytes), max_depth)


def read_json_object(path, what, max_bytes=16 << 20):
    """A JSON file that must hold an object (a trainer state, a training config), for readers whose callers report
    DataError: unreadable, malformed or not an object each say so in one line naming the file."""
    from paddle_finetune.errors import DataError

    try:
        value = read_json_file(path, max_bytes=max_bytes)
    except CheckpointError as e:
        raise DataError(str(e)) from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: not {what} (a JSON {type(value).__name__}, not an object)")
    return value


def _parse_safetensors(where, data):
    from safetensors.numpy import load

    try:
        return load(data)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError
        raise CheckpointError(f"{where}: truncated or not a safetensors file ({_one_line(e)})") from None


def file_digest(path):
    """{"size", "sha256"} of a file, read in 1 MiB blocks: a checkpoint manifest's entry, an output's record."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return {"size": size, "sha256": h.hexdigest()}


def _relative_files(directory):
    for d, _, files in os.walk(directory):
        for name in files:
            yield os.path.relpath(os.path.join(d, name), directory).replace(os.sep, "/")


def _check_entry(name, entry):
    # Names stay inside the checkpoint: a forged "../../dev/zero" must not be read.
    return (isinstance(name, str) and name == posixpath.normpath(name) and not name.startswith(("/", "../"))
            and name not in ("..", ".") and "\0" not in name and isinstance(entry, dict)
            and type(entry.get("size")) is int and 0 <= entry["size"] <= MAX_FILE_SIZE
            and isinstance(entry.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]) is not None)


def _read_manifest(directory):
    """The JSON manifest of a checkpoint directory, None when it has none (a plain model directory)."""
    path = os.path.join(directory, COMPLETE_MARKER)
    try:
        os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CheckpointError(f"{path}: unreadable ({e.strerror})") from None
    data = read_regular(path, max_bytes=64 << 20)
    if not data.lstrip().startswith(b"{"):
        if any(os.path.isfile(os.path.join(directory, n)) for n in OLD_FORMAT_FILES):
            return {"format": 1}
        raise CheckpointError(f"{path}: incomplete marker (not a JSON manifest)")
    manifest = _parse_json(path, data)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: incomplete marker (no format {FORMAT} file list)")
    if len(manifest["files"]) > MAX_MANIFEST_FILES:
        raise CheckpointError(f"{path}: lists {len(manifest['files'])} files (corrupted)")
    step = manifest.get("step")
    if step is not None and not is_count(step, MAX_STEP):
        raise CheckpointError(f"{path}: step {step!r} is not a whole number from 0 to {MAX_STEP}")
    for name, entry in manifest["files"].items():
        if not _check_entry(name, entry):
            raise CheckpointError(f"{path}: bad entry {name!r}")
    return manifest


def is_count(value, limit):
    """A whole number (not a bool) from 0 to limit."""
    return type(value) is int and 0 <= value <= limit


def _dir_reader(directory):
    """A reader for any model directory: checksummed when it is a (current format) checkpoint."""
    manifest = _read_manifest(directory)
    return _Reader(directory, manifest if manifest and manifest.get("format") == FORMAT else None)


class _Reader:
    """Reads files of one directory; in a checkpoint each file must match its manifest entry."""

    def __init__(self, directory, manifest=None):
        self.directory, self.manifest = directory, manifest
        self.seen = set()

    def has(self, name):
        if self.manifest is not None:
            return name in self.manifest["files"]
        return os.path.isfile(os.path.join(self.directory, name))

    def _path(self, name):
        """The file's path; every folder on the way must be a real folder of the checkpoint (no symlink out)."""
        parts = name.split("/")
        for i in range(1, len(parts)):
            folder = os.path.join(self.directory, *parts[:i])
            if not os.path.isdir(folder) or os.path.islink(folder):
                raise CheckpointError(f"{folder}: not a folder of {self.directory}")
        return os.path.join(self.directory, *parts)

    def read(self, name):
        path = self._path(name)
        self.seen.add(name)
        entry = None
        if self.manifest is not None:
            entry = self.manifest["files"].get(name)
            if entry is None:
                raise CheckpointError(f"{path}: not listed in {COMPLETE_MARKER}")
        with open_regular(path) as f:
            try:
                data = f.read(entry["size"] + 1 if entry else -1)
            except OSError as e:
                raise CheckpointError(f"{path}: unreadable ({e.strerror})") from None
        if entry is not None:
            if len(data) != entry["size"]:
                found = f"{len(data)} bytes" if len(data) < entry["size"] else "more bytes"
                raise CheckpointError(f"{path}: {found}, {entry['size']} recorded in {COMPLETE_MARKER} "
                                      f"({'truncated' if len(data) < entry['size'] else 'changed'})")
            if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
                raise CheckpointError(f"{path}: sha256 differs from {COMPLETE_MARKER} (corrupted)")
        return data

    def json(self, name):
        return _parse_json(os.path.join(self.directory, name), self.read(name))

    def safetensors(self, name):
        return _parse_safetensors(os.path.join(self.directory, name), self.read(name))




# ----------------------------------------------------------------------------
# names: checkpoint-<step>, and the best checkpoint recorded by name
# ----------------------------------------------------------------------------
def checkpoint_step(name):
    """The step a checkpoint-<step> name says (any number of digits: whether it agrees with the checkpoint's own
    record, and is sane, is for the reader to decide), None for any other name."""
    m = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", name or "")
    return int(m.group(1)) if m else None


def best_checkpoint_name(value):
    """A best checkpoint recorded as a name ("checkpoint-300"); old records held absolute paths."""
    return os.path.basename(os.path.normpath(value)) if value else None
