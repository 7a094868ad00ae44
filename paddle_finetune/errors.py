"""The typed errors of the library. Library code raises them with a one-line message that names the
file:line, key or value at fault; only the CLI (cli.py) prints `error: <message>` and picks the exit code.

Imports: nothing.
"""


class FinetuneError(Exception):
    """Base of every error this library raises on purpose."""


class ConfigError(FinetuneError, ValueError):
    """A bad config key or value; raised before any work starts."""


class DataError(FinetuneError, ValueError):
    """Bad input data; the message names the file and line (or dataset, split and row)."""


class CheckpointError(ConfigError):
    """A checkpoint (or model directory) that cannot be trusted or cannot resume exactly; the message
    names the file and what is wrong."""


class TrainingError(FinetuneError, RuntimeError):
    """Training cannot go on (e.g. NaN loss in fp32); the last good checkpoint is kept."""


class ConversionError(FinetuneError):
    """A Hugging Face checkpoint that cannot be converted (unsupported, inconsistent or unreadable)."""


class VerificationError(ConversionError):
    """The converted model's outputs differ from the source model's beyond the tolerance; `report` holds
    the comparison."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


class RunInterrupted(FinetuneError):
    """A run stopped by SIGTERM/SIGINT after saving a checkpoint; resume with resume_from_checkpoint=auto."""

    def __init__(self, signum, step):
        import signal

        self.signum, self.step = signum, step
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; "
                         "resume with --resume_from_checkpoint=auto")

    @property
    def exit_code(self):
        return 128 + int(self.signum)


class HelpRequested(FinetuneError):
    """--help: the text to print; the CLI prints it and exits 0."""

    def __init__(self, text):
        self.text = text
        super().__init__("help requested")
