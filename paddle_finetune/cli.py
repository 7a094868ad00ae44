"""Entry points: argv -> config -> run -> exit code, and the same run called from Python.

Library code raises typed errors (errors.py); `run_main` is the only place that turns them into the one
`error:` line users see and an exit status:

    0          finished (or --help)
    2          a FinetuneError: bad config, data, checkpoint or model, or training that cannot go on
    128 + N    stopped by signal N after saving a checkpoint (143 for SIGTERM, 130 for Ctrl-C)
    130        Ctrl-C before training started (nothing to save)

`run_in_process` is each trainer's `run(config=None, **overrides)`: the same validation and outputs, the
results returned, errors raised.

Imports: the standard library; of the project `errors`, `configuration`, `reporting`, `runtime.distributed`,
`runtime.environment` and `training.session`.
"""
import sys

from paddle_finetune.configuration.parse import config_from_values, parse_config
from paddle_finetune.errors import FinetuneError, HelpRequested, RunInterrupted
from paddle_finetune.reporting.console import error, quiet_libraries, unquiet_libraries
from paddle_finetune.runtime.distributed import leave_launched_run
from paddle_finetune.runtime.environment import record_launch_env
from paddle_finetune.training.session import Run


def run_main(main, defaults, prog, doc="", argv=None):
    """A trainer's command line: parse argv, run main(config) inside a Run, exit with the status above."""
    record_launch_env()
    owns_quieting = quiet_libraries()  # before paddle's import, so its import-time warnings are routed too
    argv = sys.argv[1:] if argv is None else list(argv)
    code = 0
    try:
        config = parse_config(defaults, argv, prog=prog, doc=doc)
        with Run(config, command=" ".join([prog, *argv])):
            main(config)
    except HelpRequested as e:
        print(e.text)
    except RunInterrupted as e:
        code = e.exit_code
    except FinetuneError as e:
        error(str(e))
        code = 2
    except KeyboardInterrupt:
        error("interrupted (Ctrl-C) before training started; nothing was saved")
        code = 130
    finally:
        if owns_quieting:  # called in-process (a notebook's train.cli([...])): give the libraries' console back
            unquiet_libraries()
    leave_launched_run(code)  # a launched worker ends here (runtime.distributed); returns otherwise
    raise SystemExit(code)


def run_in_process(main, defaults, prog, config=None, overrides=None):
    """A trainer's `run(config=None, **overrides)`: defaults <- config (a preset path or a dict) <- overrides,
    checked as the command line checks them, run inside a Run; returns the results (all_results.json's content,
    {} on ranks other than 0). Errors are raised, typed, with the message the command line prints."""
    record_launch_env()
    values = config_from_values(defaults, config, overrides)
    with Run(values, command=f"{prog} via run()"):
        outcome = main(values)
    return dict((outcome or {}).get("results") or {})
