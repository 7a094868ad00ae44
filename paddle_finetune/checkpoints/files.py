"""The checkpoint format on disk: file names, bytes written and fsynced, the CHECKPOINT_COMPLETE manifest
(size and sha256 of every file, written last), and a reader that checks every file it reads against it.

Imports: the standard library and numpy; safetensors inside; of the project `errors`.
"""
import hashlib
import json
import os
import posixpath
import re

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


def _parse_json(where, data):
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{where}: not UTF-8 text (corrupted?)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{where}: bad JSON at line {e.lineno} ({e.msg}); truncated or corrupted") from None


def _parse_safetensors(where, data):
    from safetensors.numpy import load

    try:
        return load(data)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError
        raise CheckpointError(f"{where}: truncated or not a safetensors file ({_one_line(e)})") from None


def _digest(path):
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


def _read_manifest(directory):
    """The JSON manifest of a checkpoint directory, None when it has none (a plain model directory)."""
    path = os.path.join(directory, COMPLETE_MARKER)
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    if not data.lstrip().startswith(b"{"):
        if any(os.path.isfile(os.path.join(directory, n)) for n in OLD_FORMAT_FILES):
            return {"format": 1}
        raise CheckpointError(f"{path}: incomplete marker (not a JSON manifest)")
    manifest = _parse_json(path, data)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: incomplete marker (no format {FORMAT} file list)")
    for name, entry in manifest["files"].items():
        # Names stay inside the checkpoint: a forged "../../dev/zero" must not be read.
        if name != posixpath.normpath(name) or name.startswith(("/", "../")) or name in ("..", ".") \
                or not isinstance(entry, dict) or type(entry.get("size")) is not int or not isinstance(entry.get("sha256"), str):
            raise CheckpointError(f"{path}: bad entry {name!r}")
    return manifest


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

    def read(self, name):
        path = os.path.join(self.directory, name)
        self.seen.add(name)
        entry = None
        if self.manifest is not None:
            entry = self.manifest["files"].get(name)
            if entry is None:
                raise CheckpointError(f"{path}: not listed in {COMPLETE_MARKER}")
        try:
            with open(path, "rb") as f:
                data = f.read(entry["size"] + 1 if entry else -1)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing") from None
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
    m = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", name or "")
    return int(m.group(1)) if m else None


def best_checkpoint_name(value):
    """A best checkpoint recorded as a name ("checkpoint-300"); old records held absolute paths."""
    return os.path.basename(os.path.normpath(value)) if value else None
