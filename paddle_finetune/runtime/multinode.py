"""Runs on several nodes, with or without a shared filesystem.

What it holds:
  * the start-up check of which ranks see the same output_dir: rank 0 leaves a file with a random nonce in
    its (claimed) output_dir, every rank looks for it, and the answers are exchanged through the
    launcher's TCP store. All see it (one machine, or a shared disk): nothing changes, rank 0 writes.
    Otherwise each node that does not see it keeps its own copy of the run (Hugging Face's
    save_on_each_node): the node's first rank claims its own output_dir as rank 0 claimed its own, and
    a second round checks that every rank sees exactly its writer's copy. The check files never remain,
    and a refused run leaves every output_dir as it was;
  * agreement on what each node read from its own disk: the tokenized data (and so the vocab built from
    it) and the checkpoint a resume starts from, refused with one line when two ranks differ.
Imports: the standard library; of the project `errors`, `checkpoints` (the claim of a node's output_dir),
`runtime.distributed` and `reporting`.
"""

import os
import secrets

from paddle_finetune.checkpoints.files import SHARING_CHECK_PREFIX
from paddle_finetune.checkpoints.output_dir import claim_node_output_dir
from paddle_finetune.checkpoints.storage import training_state_digest
from paddle_finetune.errors import CheckpointError, ConfigError
from paddle_finetune.reporting.console import log
from paddle_finetune.runtime.distributed import (
    all_gather,
    first_error,
    get_local_rank,
    get_rank,
    get_world_size,
    node_leader,
    set_output_writer,
)


# ----------------------------------------------------------------------------
# who sees whose output_dir: pure decisions over what every rank reported
# ----------------------------------------------------------------------------
def writers_for(sees_main, leaders):
    """The rank that writes each rank's output_dir: 0 for the ranks that saw rank 0's check file, else the first
    rank of their node (leaders[r]). A node whose ranks disagree is refused: they must share one disk."""
    for r, leader in enumerate(leaders):
        if sees_main[r] != sees_main[leader]:
            seeing, blind = (r, leader) if sees_main[r] else (leader, r)
            raise ConfigError(
                f"ranks {min(r, leader)} and {max(r, leader)} run on the same node, but only rank {seeing} sees rank 0's "
                f"output_dir (rank {blind} does not): every rank of a node must see the same output_dir")
    return [0 if sees else leader for sees, leader in zip(sees_main, leaders)]


def sharing_problem(seen, writer_of):
    """None when every rank r sees exactly its writer's check file (seen[r]: the writers whose file r saw), else
    what is wrong, in one line."""
    for r, (found, writer) in enumerate(zip(seen, writer_of)):
        others = sorted(set(found) - {writer})
        if others:
            return (f"rank {r} sees the output_dir of rank {others[0]} as well as its own writer's (rank {writer}): "
                    "some nodes share output_dir and others do not; give every node the same shared output_dir, "
                    "or each node a disk of its own")
        if writer not in found:
            return f"rank {r} does not see the output_dir its node's rank {writer} writes: every rank of a node must see the same output_dir"
    return None


def ranks_text(ranks):
    return f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"


def describe_writers(writer_of):
    """For the log: which rank writes the copy of which ranks."""
    groups = {}
    for r, w in enumerate(writer_of):
        groups.setdefault(w, []).append(r)
    return "; ".join(f"rank {w} for {ranks_text(rs)}" for w, rs in sorted(groups.items()))


# ----------------------------------------------------------------------------
# the check files
# ----------------------------------------------------------------------------
def check_file(output_dir, rank, nonce):
    return os.path.join(output_dir, f"{SHARING_CHECK_PREFIX}rank{rank}-{nonce}")


def write_check_file(output_dir, rank):
    """This writer's check file (a random nonce, also its content); returns the nonce."""
    nonce = secrets.token_hex(16)
    with open(check_file(output_dir, rank, nonce), "w", encoding="ascii") as f:
        f.write(nonce)
        f.flush()
        os.fsync(f.fileno())
    return nonce


def sees_check_file(output_dir, rank, nonce):
    try:
        with open(check_file(output_dir, rank, nonce), encoding="ascii") as f:
            return f.read() == nonce
    except OSError:  # not there (another disk), or output_dir not even created on this node
        return False


def check_round(output_dir, writers):
    """Each of `writers` leaves a check file in its output_dir; returns, for every rank, the writers whose
    file that rank sees. The files are removed once every rank has looked (all_gather returns only then)."""
    rank, nonce, error = get_rank(), None, None
    if rank in writers:
        try:
            nonce = write_check_file(output_dir, rank)
        except OSError as e:
            error = f"output_dir {output_dir} is not writable: {e.strerror}"
    try:
        published = all_gather([nonce, error])
        raise_first_error([e for _, e in published])
        return all_gather([w for w, (n, _) in enumerate(published) if n and sees_check_file(output_dir, w, n)])
    finally:
        if nonce is not None:
            os.remove(check_file(output_dir, rank, nonce))


def raise_first_error(errors):
    """The same ConfigError on every rank when any rank failed (errors from all_gather), so all stop together
    instead of the others waiting for it forever."""
    failed = first_error(errors)
    if failed:
        rank, message = failed
        raise ConfigError(f"rank {rank}: {message}" if rank else message)


# ----------------------------------------------------------------------------
# the start-up check
# ----------------------------------------------------------------------------
def check_output_dir_sharing(config):
    """Every rank, after rank 0's claim of output_dir (run_main) and init_distributed: decide who writes each
    rank's output_dir (distributed.set_output_writer), claiming a node's own copy where it has one. Returns
    the writer of every rank (all 0 with a shared disk). See the module docstring."""
    world_size = get_world_size()
    if world_size == 1:
        return [0]
    out = os.path.abspath(config["output_dir"])
    leaders = all_gather(node_leader(get_rank(), get_local_rank()))
    sees_main = [0 in found for found in check_round(out, [0])]
    writer_of = writers_for(sees_main, leaders)
    node_writers = sorted(set(writer_of) - {0})
    if node_writers:
        error = None
        if get_rank() in node_writers:
            try:
                claim_node_output_dir(config)
            except ConfigError as e:
                error = str(e)
        raise_first_error(all_gather(error))
        problem = sharing_problem(check_round(out, [0] + node_writers), writer_of)
        if problem:
            raise ConfigError(problem)
        blind = [r for r, w in enumerate(writer_of) if w]
        log(f"output_dir {config['output_dir']} is not one shared directory ({ranks_text(blind)} cannot see rank 0's): each node "
            f"keeps its own checkpoints and final model, written by its first rank ({describe_writers(writer_of)}); "
            "logs, metrics and predictions are on rank 0's node only")
    set_output_writer(writer_of[get_rank()])
    if get_rank() in node_writers:  # into this rank's log/workerlog.N
        print(f"rank {get_rank()}: writing this node's checkpoints and final model into {out}", flush=True)
    return writer_of


# ----------------------------------------------------------------------------
# agreement on what each node read from its own disk
# ----------------------------------------------------------------------------
def check_same_across_ranks(values, what, advice):
    """values: one per rank (all_gather); a ConfigError naming the first rank that differs from rank 0."""
    for r, value in enumerate(values):
        if value != values[0]:
            raise ConfigError(f"{what} differs between rank 0 ({values[0]}) and rank {r} ({value}): {advice}")


def agree_on_data(fingerprints):
    """fingerprints: {name: checkpoints.data_fingerprint} of this rank's tokenized splits. Every node reads its own
    files and builds its own vocab from them: a difference would train or score on other data, silently."""
    if get_world_size() == 1:
        return
    gathered = all_gather(fingerprints)
    for name in sorted(set().union(*gathered), key=lambda n: (n != "train", n)):  # train first: the vocab comes from it
        check_same_across_ranks([short_fingerprint(g.get(name)) for g in gathered], f"the tokenized {name} data",
                                "every node needs the same data files (and tokenizer)")


def short_fingerprint(fingerprint):
    """"sha256:<64 hex> (N features)" as "sha256:<12 hex> (N features)", for a readable error line."""
    if not fingerprint or not fingerprint.startswith("sha256:"):
        return fingerprint
    digest, _, rest = fingerprint[len("sha256:"):].partition(" ")
    return f"sha256:{digest[:12]} {rest}".strip()


def agree_on_resume(resolve):
    """Run resolve() (checkpoints.resolve_resume on this rank's output_dir) on every rank, and return its result
    once every rank found the same checkpoint: same step and same weights and optimizer state (each node may
    read its own copy). A rank that failed, or two that differ, stop every rank with one line."""
    if get_world_size() == 1:
        return resolve()
    error, found = None, None
    try:
        found = resolve()
    except ConfigError as e:  # CheckpointError included
        error = str(e)
    raise_first_error(all_gather(error))
    mine = [found.name, training_state_digest(found)] if found is not None else None
    chosen = all_gather(mine)
    for r, theirs in enumerate(chosen):
        if theirs != chosen[0]:
            def show(c):
                return f"{c[0]} (state {c[1][:12]})" if c else "no checkpoint"
            raise CheckpointError(
                f"resume_from_checkpoint: rank 0 resumes from {show(chosen[0])} but rank {r} from {show(theirs)}: every node must "
                "resume the same checkpoint; copy rank 0's into the others' output_dir, or pass resume_from_checkpoint=<path> naming one every node has")
    return found
