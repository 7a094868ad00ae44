"""Checkpoints and the output directory.

    files            the on-disk format: safetensors for tensors, JSON for everything else, never a pickle on
                     load; a CHECKPOINT_COMPLETE manifest (size and sha256 of every file) written last, so a
                     checkpoint is either complete and verified or refused naming the bad file
    optimizer_state  the optimizer's tensors, keyed by structured parameter names
    storage          saving (atomic: temp dir, manifest, rename), reading and validating, applying
    listing          the checkpoints of an output_dir, rotation, the best one by name, the model a
                     prediction tool loads
    resume           resume policy: auto with fall-back, refusing resumes that cannot be exact
<<<<<<< HEAD
    output_dir       one run per output_dir (an flock held for the run), and what a run may write there
    ownership        what paddle-finetune wrote in a directory (.paddle_finetune_owned.json), and the one rule: a
                     path is written over or removed only if this run or an earlier run of this toolkit wrote it;
                     protected places, inputs, foreign files; check_destination for tools writing a directory
=======
    output_dir       one run per output_dir (an flock held for the run), and the non-empty / overwrite policy
    export_dir       the directory an export writes a whole model into: never its source, never over files;
                     staged next to it and renamed into place
>>>>>>> dc0160e (README: what the exports cover and what they do not; package docstrings name the export modules; tools/benchmark_inference.py)

Model weights (reading any model directory without unpickling) are in `models.weights`: checkpoints hold a
model, and so do directories that are no checkpoint.

Imports: the standard library and numpy; of the project `errors`, `paths`, `models.weights`, `runtime` and
`reporting`; safetensors, paddle and paddlenlp inside the functions.
"""
