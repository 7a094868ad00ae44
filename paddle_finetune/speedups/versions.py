"""Which library versions the speed patches were written and tested against: outside them a patch is
skipped, with one log line, and the library's own code runs.

Imports: the standard library; of the project `reporting`.
"""
import re

from paddle_finetune.reporting.console import log

# (first, last) major.minor each group of patches was written and tested against.
WRITTEN_FOR = {"paddle": ((2, 6), (3, 3)), "paddlenlp": ((2, 8), (2, 8))}


def _major_minor(version):
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def version_supported(package, version=None):
    """Whether `package` (paddle or paddlenlp) is a version the patches for it were written for.

    Development builds ("0.0.0") are not assumed to be compatible.
    """
    if version is None:
        version = __import__(package).__version__
    found = _major_minor(version)
    first, last = WRITTEN_FOR[package]
    return found is not None and first <= found <= last


_skipped = set()


def _supported(package):
    ok = version_supported(package)
    if not ok and package not in _skipped:
        _skipped.add(package)
        first, last = WRITTEN_FOR[package]
        log(f"fast_kernels: {package} {__import__(package).__version__} is outside the versions these patches were "
            f"written for ({first[0]}.{first[1]}-{last[0]}.{last[1]}); using {package}'s own code")
    return ok
