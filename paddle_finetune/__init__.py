"""paddle_finetune: the library behind the trainers (train.py, train_classification.py, train_mlm.py,
train_clm.py) and the tools. Each folder or module holds one concern, and says in its docstring what
it may import:

    errors          the typed errors library code raises; the CLI turns them into one `error:` line
    paths           where the project's own folders are (datasets/, configs/)
    configuration   CONFIG dicts, --config files, --key=value overrides, --help, value rules
    data            reading files and named datasets, splits, vocabularies, the batch order
    models          loading weights without unpickling, pretrained models and tokenizers
    checkpoints     the checkpoint format, saving and reading, resume policy, the output directory
    training        the task contract, the optimizer, the loop, the run that owns its state
    evaluation      evaluation sharded across ranks, best-model selection, metrics (ROUGE, ...)
    reporting       console and run.log, progress bars, result files, dashboards, curves
    runtime         process environment: device, threads, ranks, multi-node, random state
    speedups        every speed patch, behind fast_kernels
    conversion      Hugging Face <-> Paddle checkpoint conversion (and export to Hugging Face format)
    inference       export for Paddle Inference (static graphs), and predicting with the exported model
    tasks           what each trainer adds: tokenization, batches, loss, generation, scoring
    prediction      what the prediction tools share
    cli             entry points: argv -> config -> run -> exit code

Importing the package imports nothing heavy: paddle and paddlenlp load inside the functions that need them,
after runtime.environment has recorded the launch environment.
"""
__version__ = "0.4.0"
