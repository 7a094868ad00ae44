"""The directory an export writes a whole model into (tools/export_hf.py, tools/export_inference.py): never the
source model or a folder inside it, never a file or a non-empty directory; built in a hidden stage next to it and
renamed into place, so a failed export leaves nothing behind and a reader never sees half a model.

Imports: the standard library; of the project `checkpoints.ownership` (the rule).
"""
import os
import shutil
import tempfile
from contextlib import contextmanager

from paddle_finetune.checkpoints.ownership import check_destination, real


def check_export_dir(dst, *sources, tool="export"):
    """The real path DST resolves to (symlinks followed), or ConfigError when writing it could touch a source
    (SRC as given and the model directory it resolved to), a protected place or anything already there: the
    project's one rule for tools writing a directory (ownership.check_destination), with nothing of an earlier
    export replaceable, since an export is one atomic rename into an absent or empty directory."""
    source, *others = sources
    check_destination(dst, tool=tool, source=source, inputs=[("the source", s) for s in others], what="destination",
                      replaceable=False)
    return real(dst)


@contextmanager
def staged_export_dir(dst, *sources, tool="export"):
    """Yield a fresh hidden directory next to DST; when the block ends without an error it becomes DST (an empty
    DST is replaced), otherwise it is removed and DST is as it was."""
    real_dst = check_export_dir(dst, *sources, tool=tool)
    parent = os.path.dirname(real_dst)
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=f".{os.path.basename(real_dst)}.export-", dir=parent)
    try:
        yield stage
        check_export_dir(dst, *sources, tool=tool)  # again: something may have been written there meanwhile
        if os.path.isdir(real_dst):
            os.rmdir(real_dst)  # empty (checked just now); fails, and so refuses, if a file appeared since
        os.rename(stage, real_dst)
    finally:
        if os.path.isdir(stage):
            shutil.rmtree(stage, ignore_errors=True)
