"""Data-parallel helpers: which rank this is and on which node, which rank writes its output_dir,
waiting for the others, and exchanging small objects and numbers.

Ranks are started by Paddle's own launcher (`python -m paddle.distributed.launch`), which sets
PADDLE_TRAINER_ID / PADDLE_TRAINERS_NUM, and per node PADDLE_LOCAL_RANK / PADDLE_LOCAL_SIZE (paddle 2.6
and 3.x; a node's ranks are numbered consecutively). Waiting and exchanging go through the launcher's
TCP store, which has no deadline, instead of a gloo/NCCL collective (gloo times out after 30 s, longer
than rank 0 may spend evaluating or saving).

Imports: the standard library, and paddle inside the functions that need it; of the project only
`runtime.state` (which rank writes output_dir is the run's), so every other module may import this one.
"""

import json
import os
import time

from paddle_finetune.runtime import state


def get_rank():
    return int(os.environ.get("PADDLE_TRAINER_ID", "0"))


def get_world_size():
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def get_local_world_size():
    """Ranks on this machine (the launcher's PADDLE_LOCAL_SIZE), for sharing its cores."""
    return int(os.environ.get("PADDLE_LOCAL_SIZE", get_world_size()) or 1)


def get_local_rank():
    """This rank's index on its machine (the launcher's PADDLE_LOCAL_RANK)."""
    return int(os.environ.get("PADDLE_LOCAL_RANK", get_rank()) or 0)


def node_leader(rank, local_rank):
    """The first rank on a rank's machine: the launcher gives node n the ranks offset_n + local rank."""
    return rank - local_rank


def is_main_process():
    return get_rank() == 0


# Which rank writes this rank's output_dir: rank 0, unless the start-up check (multinode.py) found that this
# node does not see rank 0's output_dir; then the node's first rank writes the node's own copy.
def set_output_writer(rank):
    state.current().output_writer = rank


def output_writer():
    return state.current().output_writer


def writes_output():
    """This rank writes checkpoints and the final model into output_dir (rank 0, or a node's writer)."""
    return get_rank() == output_writer()


_process = {"initialized": False}  # this process joined the launcher's ranks (init_distributed ran)
# How long rank 0 waits for the other ranks to be done with its store before leaving: after a finished run (they
# are past the last exchange, so this is a formality), and after a failed one (when every rank failed the same
# check, as with raise_first_error, they follow within a second; a rank stuck elsewhere is the launcher's to stop).
DEPARTURE_WAIT_S = {True: 60.0, False: 10.0}


def init_distributed():
    import paddle.distributed as dist

    if get_world_size() > 1:
        dist.init_parallel_env()
        _process["initialized"] = True
    return get_rank(), get_world_size()


def leave_launched_run(exit_code):
    """The end of a launched worker process (the CLI's last step, once the run has released everything it owns).

    Rank 0's process hosts the launcher's TCP store: while another rank still reads from it, rank 0 must not exit
    (that rank then dies on "TCP receive error" instead of printing its own error line), and when rank 0's process
    tears the store and the process group down with a peer still connected, it can abort (SIGABRT, exit -6, seen
    after 2-rank evaluations that succeeded). So every other rank says it is done with the store (its last store
    operation), rank 0 waits for that (DEPARTURE_WAIT_S), and then every rank flushes and leaves with os._exit: no
    C++ destructor of the store or of the process group runs against a peer. Returns only when this process is not
    a launched worker."""
    if get_world_size() == 1 or not _process["initialized"]:
        return
    import logging
    import sys

    try:
        store = _store()
        if is_main_process():
            deadline = time.monotonic() + DEPARTURE_WAIT_S[exit_code == 0]
            while store.add("paddle_finetune/departed", 0) < get_world_size() - 1 and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            store.add("paddle_finetune/departed", 1)
    except Exception:  # noqa: BLE001 - a store already gone: leave all the same
        pass
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(exit_code)


def _store():
    from paddle.base import core

    return core.create_or_get_global_tcp_store()


def _wait_for_count(store, key, count):
    """Until the counter `key` reaches `count`, however long that takes (polling add(key, 0), which never
    times out, unlike a collective or store.wait/get)."""
    while store.add(key, 0) < count:
        time.sleep(0.05)


_exchange_counts = {}


def _exchange_key(kind):
    # Every rank makes the same sequence of calls of each kind, so the n-th one has the same key on every rank.
    _exchange_counts[kind] = _exchange_counts.get(kind, 0) + 1
    return f"paddle_finetune/{kind}/{_exchange_counts[kind]}"


def barrier():
    """Wait for every rank, however long rank 0 spends alone evaluating or saving.

    A gloo collective (CPU) times out after 30 s, and an NCCL one after PADDLE_PG_TIMEOUT,
    so the wait goes through the launcher's TCP store instead, which has no deadline.
    If a rank dies, the launcher stops the others.
    """
    if get_world_size() == 1:
        return
    store = _store()
    key = _exchange_key("barrier")
    store.add(key, 1)
    _wait_for_count(store, key, get_world_size())


def _read_json(store, key):
    return json.loads(bytes(store.get(key)).decode("utf-8"))


def _publish(kind, obj):
    """This rank's obj under a fresh key of this exchange; (store, key)."""
    store = _store()
    key = _exchange_key(kind)
    store.set(f"{key}/{get_rank()}", json.dumps(obj).encode("utf-8"))
    store.add(f"{key}/count", 1)
    return store, key


def _collect(store, key):
    """Every rank's published obj, in rank order, once all have published."""
    _wait_for_count(store, f"{key}/count", get_world_size())
    return [_read_json(store, f"{key}/{r}") for r in range(get_world_size())]


def gather_to_main(obj):
    """Rank 0 gets [rank 0's obj, rank 1's obj, ...] (JSON-serialisable objects); the others get None.

    Through the launcher's TCP store, like barrier(): a rank may reach this long after another
    (a long evaluation share), which a gloo collective would time out on. The store cannot delete
    a key, so rank 0 empties the values it read: a run's evaluations do not pile up in its memory.
    """
    if get_world_size() == 1:
        return [obj]
    store, key = _publish("gather", obj)
    if not is_main_process():
        return None
    gathered = _collect(store, key)
    for r in range(get_world_size()):
        store.set(f"{key}/{r}", b"")
    return gathered


def all_gather(obj):
    """[rank 0's obj, rank 1's obj, ...] on every rank (JSON-serialisable), through the TCP store.

    Returns once every rank has read every value, so each rank can then empty its own (see gather_to_main).
    """
    if get_world_size() == 1:
        return [obj]
    store, key = _publish("all_gather", obj)
    gathered = _collect(store, key)
    store.add(f"{key}/read", 1)
    _wait_for_count(store, f"{key}/read", get_world_size())
    store.set(f"{key}/{get_rank()}", b"")
    return gathered


def broadcast_from_main(obj):
    """Rank 0's obj (JSON-serialisable) on every rank, e.g. the metrics only rank 0 computed."""
    if get_world_size() == 1:
        return obj
    store = _store()
    key = _exchange_key("broadcast")
    if is_main_process():
        store.set(key, json.dumps(obj).encode("utf-8"))
        store.add(f"{key}/ready", 1)
        # Rank 0's process hosts the store: it returns only once every rank has read, so it never exits (taking the
        # store with it) while a slower rank still reads the last broadcast of a run (seen as a -6 abort at exit).
        _wait_for_count(store, f"{key}/read", get_world_size() - 1)
        return obj
    _wait_for_count(store, f"{key}/ready", 1)
    value = _read_json(store, key)
    store.add(f"{key}/read", 1)
    return value


def first_error(errors):
    """(rank, message) of the lowest rank whose entry (from all_gather) is an error message, else None."""
    return next(((r, e) for r, e in enumerate(errors) if e), None)


def mean_across_ranks(value):
    """The global mean of a per-rank float (the loss), so every rank logs and checks the same number."""
    if get_world_size() == 1:
        return value
    import paddle
    import paddle.distributed as dist

    t = paddle.to_tensor([value], dtype="float64")
    dist.all_reduce(t)
    return float(t.item()) / get_world_size()


def broadcast_flag(value):
    """Rank 0's decision (stop on signal) reaches every rank, so all stop at the same step."""
    if get_world_size() == 1:
        return value
    import paddle
    import paddle.distributed as dist

    t = paddle.to_tensor([1 if value else 0], dtype="int64")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
