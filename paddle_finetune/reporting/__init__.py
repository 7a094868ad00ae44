"""What a run tells its user: the console and output_dir/run.log (console), progress bars with ETA
(progress), result files and the end-of-run summary (files), the dashboards wandb and VisualDL
(dashboards) and a picture of the training curves (curves).

Only rank 0 reports; other ranks are silent, except error() and library warnings, which a rank prints to
its own stderr (the launcher's log/workerlog.N): a dying rank must say why.

Imports: the standard library; tqdm, wandb, visualdl and matplotlib inside the functions that use them;
of the project only `runtime.distributed`. Nothing here imports paddle or paddlenlp: their loggers are
reached by name, so quiet_libraries() works before or after they are imported.
"""
