"""The process a run lives in: the launch environment recorded before paddle loads, the device and math
threads, data-parallel ranks and the launcher's TCP store, multi-node output directories, and every
random-number generator.

Why one folder: these are the facts about *where* the code runs, decided once per process at the start
of a run, that the rest of the library reads but never decides.

Imports: the standard library, numpy; of the project `errors`, `reporting` and `checkpoints` (multinode);
paddle inside functions.
"""
