"""The dashboards: wandb (offline without credentials, silent, its sync command printed) and VisualDL
(LogWriter; on resume the curves continue without replayed steps). Reporting is the open set of one run;
every method is a no-op for a target that is not open.

Imports: the standard library; wandb, visualdl and protobuf inside the functions; of the project
`reporting.console` and `runtime.distributed`.
"""
import json
import os
import re
import time

from paddle_finetune.reporting import console
from paddle_finetune.reporting.console import log, warn, warn_once
from paddle_finetune.reporting.files import _plain
from paddle_finetune.runtime.distributed import is_main_process
from paddle_finetune.runtime.state import note_write

VISUALDL_DIR = "visualdl"
TARGETS = ("wandb", "visualdl")

# ----------------------------------------------------------------------------
# dashboards: wandb and VisualDL
# ----------------------------------------------------------------------------
def wandb_has_credentials():
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    return os.path.exists(netrc) and "api.wandb.ai" in open(netrc, encoding="utf-8", errors="ignore").read()


def parse_targets(targets):
    """["wandb", "visualdl"] from a list or from a "wandb,visualdl" string; "none" and "" mean nothing."""
    if isinstance(targets, str):
        targets = targets.split(",")
    names = [str(t).strip().lower() for t in (targets or [])]
    names = [t for t in names if t and t != "none"]
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        raise ValueError(f"unknown report_to target(s) {unknown}; choose among {list(TARGETS)}")
    return list(dict.fromkeys(names))


def _open_wandb(config, output_dir, run_id):
    """A silent wandb run (offline without credentials: we print the sync command); None if it cannot start."""
    try:
        import wandb
    except ImportError:
        warn_once("report_to includes wandb but wandb is not installed: pip install wandb")
        return None
    offline = not wandb_has_credentials() and os.environ.get("WANDB_MODE") not in ("disabled", "offline")
    try:
        # Silent: no "Tracking run", run history or sync block (init's settings, the run's printer) and
        # no "Detected [huggingface_hub.inference] in use" or Weave advert (wandb's global terminal
        # settings, fixed when wandb.setup creates its singleton; wandb.init alone would create it loud).
        wandb.setup(settings=wandb.Settings(silent=True))
        note_write(os.path.join(output_dir, "wandb"), "dir")  # where wandb.init(dir=output_dir) keeps its files
        run = wandb.init(
            project=config.get("wandb_project") or "paddle-finetune",
            name=config.get("wandb_run_name") or None,
            dir=output_dir,
            config=config,
            id=run_id,
            resume="allow",
            mode="offline" if offline else None,
            settings=wandb.Settings(silent=True),
        )
    except Exception as e:  # noqa: BLE001 - a dashboard that cannot start must not stop the training
        warn(f"wandb could not start ({type(e).__name__}: {e}); continuing without wandb")
        return None
    if getattr(run, "offline", False) and getattr(run, "dir", None):
        where = os.path.dirname(run.dir)
        log(f"wandb: no credentials found, logging offline to {where}; upload later with: wandb sync {where}")
    elif getattr(run, "url", None):
        log(f"wandb: {run.url}")
    return run


def _visualdl_record_files(logdir):
    if not os.path.isdir(logdir):
        return []
    return sorted(n for n in os.listdir(logdir) if "vdlrecords" in n and os.path.isfile(os.path.join(logdir, n)))


def _next_record_file(existing):
    """A new record file name that sorts after every existing one: VisualDL's reader shows only the
    last name of a directory (and LogWriter truncates a name made in the same second)."""
    number = int(time.time())
    for name in existing:
        m = re.fullmatch(r"vdlrecords\.(\d+)\.log", name)
        if m:
            number = max(number, int(m.group(1)) + 1)
    return f"vdlrecords.{number:010d}.log"


def read_visualdl_records(path):
    """(kind, tag, step, value, walltime_ms) of one VisualDL record file, kind "scalar" or "text",
    read with VisualDL's own record reader; stops at a record a kill cut in half."""
    from google.protobuf.message import DecodeError
    from visualdl.proto import record_pb2
    from visualdl.reader.record_reader import RecordReader

    out = []
    for raw in RecordReader(path).get_all():
        record = record_pb2.Record()
        try:
            record.ParseFromString(raw)
        except DecodeError:
            break
        for value in record.values:
            kind = value.WhichOneof("one_value")
            if kind == "value":
                out.append(("scalar", value.tag, value.id, value.value, value.timestamp))
            elif kind == "text":
                out.append(("text", value.tag, value.id, value.text.encoded_text_string, value.timestamp))
    return out


def _config_text(config):
    return json.dumps(config, ensure_ascii=False, indent=2, default=str)


def _open_visualdl(logdir, config, resume_step, display_name):
    """A LogWriter on logdir. On resume, the records up to resume_step are copied into the new file and
    the old files removed, so a reader sees one run whose curves continue (no replayed steps twice)."""
    try:
        from visualdl import LogWriter
    except ImportError:
        warn_once("report_to includes visualdl but visualdl is not installed: pip install visualdl")
        return None
    note_write(logdir, "dir")
    os.makedirs(logdir, exist_ok=True)
    existing = _visualdl_record_files(logdir)
    carried = []
    if resume_step is not None and existing:
        try:
            carried = [r for r in read_visualdl_records(os.path.join(logdir, existing[-1]))
                       if r[2] <= resume_step and not (r[0] == "text" and r[1] == "config")]
        except Exception as e:  # noqa: BLE001 - an unreadable old file must not stop the run
            warn(f"visualdl: could not read {existing[-1]} ({type(e).__name__}: {e}); its records are not carried over")
    writer = LogWriter(logdir=logdir, file_name=_next_record_file(existing), display_name=display_name)
    for kind, tag, step, value, walltime in carried:
        if kind == "scalar":
            writer.add_scalar(tag, value, step, walltime=walltime)
        else:
            writer.add_text(tag, value, step=step, walltime=walltime)
    writer.add_text("config", _config_text(config), step=0)
    if resume_step is not None:
        writer.flush()  # the carried records are on disk before the old files go
        for name in existing:
            os.remove(os.path.join(logdir, name))
    return writer


def _hparams(config, prefix=""):
    """Flat int/float/str hyperparameters for VisualDL's hparams view (nested dicts as a.b)."""
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_hparams(v, key + "."))
        elif isinstance(v, bool):
            out[key] = str(v)
        elif isinstance(v, (int, float, str)):
            out[key] = v
        elif v is not None:
            out[key] = str(v)
    return out


class Reporting:
    """The open dashboards of one run (rank 0). Every method is a no-op for a target that is not open,
    so the loop calls them unconditionally. Tags are the caller's: train/loss, train/lr,
    train/tokens_per_s, eval/<metric>."""

    def __init__(self, wandb_run=None, visualdl_writer=None, config=None):
        self.wandb_run = wandb_run
        self.visualdl = visualdl_writer
        self.config = config or {}
        self.last_step = 0
        self._tags = []
        self._labels = {}  # tag -> the last string label sent

    @property
    def wandb_run_id(self):
        """Save it in the checkpoint's train state; pass it back as run_id when resuming."""
        return getattr(self.wandb_run, "id", None)

    def _wandb_accepts(self, step):
        # wandb drops (and prints a warning for) a step below the run's last one: after resuming an
        # online run from an older checkpoint, the replayed steps are already on the server.
        current = getattr(self.wandb_run, "step", 0) or 0
        if step < current:
            warn_once(f"wandb: this run already has steps up to {current}; steps replayed after the resume are not sent again")
            return False
        return True

    def scalars(self, metrics, step):
        """Numbers as curves. A string (eval/rouge_style) labels how they were computed: it goes beside them, into
        wandb's run summary and a VisualDL text of that tag (when it changes), never into a curve."""
        metrics = {k: _plain(v) for k, v in metrics.items()}
        labels = {k: v for k, v in metrics.items() if isinstance(v, str)}
        metrics = {k: v for k, v in metrics.items() if k not in labels}
        self.last_step = max(self.last_step, step)
        for tag in metrics:
            if tag not in self._tags:
                self._tags.append(tag)
        if self.wandb_run is not None and self._wandb_accepts(step):
            self.wandb_run.log(metrics, step=step)
            if labels:
                self.wandb_run.summary.update(labels)
        if self.visualdl is not None:
            for tag, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.visualdl.add_scalar(tag, float(value), step)
            for tag, value in labels.items():
                if self._labels.get(tag) != value:
                    self.visualdl.add_text(tag, value, step=step)
        self._labels.update(labels)

    def table(self, name, columns, rows, step):
        """A table of rows (e.g. eval samples); wandb only."""
        if self.wandb_run is not None and self._wandb_accepts(step):
            import wandb

            self.wandb_run.log({name: wandb.Table(columns=list(columns), data=[list(r) for r in rows])}, step=step)

    def summary(self, values):
        """End-of-run values (best metric, test metrics): the wandb run summary; in VisualDL a "summary"
        text and the hparams record linking the config to the eval/* curves."""
        values = {k: _plain(v) for k, v in values.items()}
        if self.wandb_run is not None:
            self.wandb_run.summary.update(values)
        if self.visualdl is not None:
            self.visualdl.add_text("summary", "\n".join(f"{k}: {v}" for k, v in values.items()), step=self.last_step)
            metrics = [t for t in self._tags if t.startswith("eval/")]
            if metrics:
                self.visualdl.add_hparams(_hparams(self.config), metrics)

    def flush(self):
        """Call after each checkpoint save: VisualDL writes from a background thread, and a resume carries
        over only what reached its file."""
        if self.visualdl is not None:
            self.visualdl.flush()

    def close(self):
        """Finish wandb (repeating the sync command when offline) and flush VisualDL. Idempotent."""
        run, self.wandb_run = self.wandb_run, None
        if run is not None:
            run.finish()
            if getattr(run, "offline", False) and getattr(run, "dir", None):
                log(f"wandb: offline run saved; upload it with: wandb sync {os.path.dirname(run.dir)}")
        writer, self.visualdl = self.visualdl, None
        if writer is not None:
            writer.close()


def open_reporting(targets, config, output_dir, run_id=None, resume_step=None):
    """Open the dashboards named in targets ("wandb", "visualdl") for a run writing to output_dir.

    run_id: the wandb run id saved in the checkpoint, so a resumed run continues the same wandb run.
    resume_step: the step training restarts from when resuming (records past it, logged by a killed
    run, are dropped from VisualDL as truncate_jsonl drops them from the JSONL logs); None for a new run.
    Other ranks get a Reporting that does nothing.
    """
    targets = parse_targets(targets)
    if not is_main_process():
        return Reporting()
    console.reroute_library_chatter()  # libraries imported since quiet_libraries() may have added console handlers
    wandb_run = _open_wandb(config, output_dir, run_id or None) if "wandb" in targets else None
    writer = None
    if "visualdl" in targets:
        writer = _open_visualdl(os.path.join(output_dir, VISUALDL_DIR), config, resume_step,
                                display_name=os.path.basename(os.path.abspath(output_dir)))
    return Reporting(wandb_run, writer, config)
