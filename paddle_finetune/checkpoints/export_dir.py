"""The directory an export writes a whole model into (tools/export_hf.py, tools/export_inference.py): never the
source model or a folder inside it, never a file or a non-empty directory; built in a hidden stage next to it and
renamed into place, so a failed export leaves nothing behind and a reader never sees half a model.

Imports: the standard library; of the project `errors`.
"""
import os
import shutil
import tempfile
from contextlib import contextmanager

from paddle_finetune.errors import ConfigError


def _inside(path, parent):
    return path == parent or path.startswith(parent.rstrip(os.sep) + os.sep)


def check_export_dir(dst, *sources):
    """The real path DST resolves to (symlinks followed), or ConfigError when writing it could touch a source
    (SRC as given and the model directory it resolved to) or anything already there."""
    real = os.path.realpath(dst)
    for src in sources:
        real_src = os.path.realpath(src)
        if _inside(real, real_src):
            shown = dst if os.path.abspath(dst) == real else f"{dst} (-> {real})"
            raise ConfigError(f"destination {shown} is {'the source' if real == real_src else 'inside the source'} "
                              f"{src}; an export never writes into its source: give a directory outside it")
        if _inside(real_src, real):
            raise ConfigError(f"destination {dst} contains the source {src}; give a new or empty directory")
    if os.path.lexists(real) and not os.path.isdir(real):
        raise ConfigError(f"destination {dst} is a file; give a new or empty directory")
    if os.path.isdir(real) and os.listdir(real):
        raise ConfigError(f"destination {dst} is not empty ({len(os.listdir(real))} entries); an export never "
                          "writes over files: give a new or empty directory")
    return real


@contextmanager
def staged_export_dir(dst, *sources):
    """Yield a fresh hidden directory next to DST; when the block ends without an error it becomes DST (an empty
    DST is replaced), otherwise it is removed and DST is as it was."""
    real = check_export_dir(dst, *sources)
    parent = os.path.dirname(real)
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=f".{os.path.basename(real)}.export-", dir=parent)
    try:
        yield stage
        check_export_dir(dst, *sources)  # again: something may have been written there meanwhile
        if os.path.isdir(real):
            os.rmdir(real)  # empty (checked just now); fails, and so refuses, if a file appeared since
        os.rename(stage, real)
    finally:
        if os.path.isdir(stage):
            shutil.rmtree(stage, ignore_errors=True)
