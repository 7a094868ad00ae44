"""Shared by the multi-process tests: start entry points as one process or through Paddle's own launcher
(several at once, so their start-up overlaps on a 2-core machine), then wait and read their worker logs."""
import os
import re
import socket
import subprocess
import sys

from paddle_finetune.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_env(threads=None):
    """wandb off, unbuffered; OMP_NUM_THREADS as given, else unset (the launcher's own paddle import then sets it
    to 1 for its ranks). Set it explicitly: once the pytest process imported paddle, its environment holds a 1."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


class Job:
    """A started entry point; finish() waits and returns (returncode, console text, {workerlog name: text})."""

    def __init__(self, cmd, log_dir=None, threads=None):
        self.cmd, self.log_dir = cmd, log_dir
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=run_env(threads))

    def finish(self, timeout=240):
        out, _ = self.proc.communicate(timeout=timeout)
        logs = {}
        if self.log_dir and os.path.isdir(self.log_dir):
            logs = {n: open(os.path.join(self.log_dir, n), errors="replace").read()
                    for n in sorted(os.listdir(self.log_dir)) if n.startswith("workerlog")}
        return self.proc.returncode, out, logs


def start_one(args, threads=2):
    """`python <args>`: one process with `threads` math threads (this machine's 2 cores)."""
    return Job([sys.executable, *args], threads=threads)


def start_ranks(args, log_dir, nproc=2):
    """`python -m paddle.distributed.launch --nproc_per_node N <args>`: N CPU ranks (gloo) on this machine."""
    return Job([sys.executable, "-m", "paddle.distributed.launch", "--log_dir", str(log_dir), "--nproc_per_node", str(nproc), *args],
               log_dir=str(log_dir))


def start_node(args, log_dir, master, node_rank, nnodes=2):
    """One "node" of a multi-node job: its own launcher, meeting the others at `master` (--rank fixes which is node 0)."""
    return Job([sys.executable, "-m", "paddle.distributed.launch", "--master", master, "--rank", str(node_rank),
                "--nnodes", str(nnodes), "--nproc_per_node", "1", "--log_dir", str(log_dir), *args], log_dir=str(log_dir))


def succeeded(result):
    code, out, logs = result
    assert code == 0, f"rc {code}\n{out[-3000:]}\n" + "\n".join(f"--- {n}\n{t[-3000:]}" for n, t in logs.items())
    return result


EVALUATED = re.compile(r"^rank (\d+): evaluated (\d+) of (\d+) (\w+) rows$", re.M)


def rows_per_rank(logs):
    """{split: {rank: rows}} from the worker logs' "rank R: evaluated X of Y <split> rows" lines, and {split: Y}."""
    shares, totals = {}, {}
    for text in logs.values():
        for rank, rows, total, split in EVALUATED.findall(text):
            shares.setdefault(split, {})[int(rank)] = int(rows)
            totals[split] = int(total)
    return shares, totals
