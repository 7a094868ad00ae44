"""Data-parallel helpers: which rank this is, waiting for the others, and agreeing on numbers.

Ranks are started by Paddle's own launcher (`python -m paddle.distributed.launch`), which sets
PADDLE_TRAINER_ID / PADDLE_TRAINERS_NUM. Waiting goes through the launcher's TCP store, which has
no deadline, instead of a gloo/NCCL collective (gloo times out after 30 s, longer than rank 0 may
spend evaluating or saving).

Imports: the standard library, and paddle inside the functions that need it. Nothing else of
the project, so every other module may import this one.
"""
import json
import os
import time


def get_rank():
    return int(os.environ.get("PADDLE_TRAINER_ID", "0"))


def get_world_size():
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def get_local_world_size():
    """Ranks on this machine (the launcher's PADDLE_LOCAL_SIZE), for sharing its cores."""
    return int(os.environ.get("PADDLE_LOCAL_SIZE", get_world_size()) or 1)


def is_main_process():
    return get_rank() == 0


def init_distributed():
    import paddle.distributed as dist

    if get_world_size() > 1:
        dist.init_parallel_env()
    return get_rank(), get_world_size()


_barrier_count = 0


def _store():
    from paddle.base import core

    return core.create_or_get_global_tcp_store()


def barrier():
    """Wait for every rank, however long rank 0 spends alone evaluating or saving.

    A gloo collective (CPU) times out after 30 s, and an NCCL one after PADDLE_PG_TIMEOUT,
    so the wait goes through the launcher's TCP store instead, which has no deadline.
    If a rank dies, the launcher stops the others.
    """
    global _barrier_count
    if get_world_size() == 1:
        return
    store = _store()
    _barrier_count += 1
    key = f"paddle_finetune/barrier/{_barrier_count}"
    store.add(key, 1)
    while store.add(key, 0) < get_world_size():
        time.sleep(0.05)


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


_exchange_count = 0


def _exchange_key(kind):
    global _exchange_count
    _exchange_count += 1
    return f"paddle_finetune/{kind}/{_exchange_count}"


def gather_to_main(obj):
    """Rank 0 gets [rank 0's obj, rank 1's obj, ...] (JSON-serialisable objects); the others get None.

    Through the launcher's TCP store, like barrier(): a rank may reach this long after another
    (a long evaluation share), which a gloo collective would time out on.
    """
    if get_world_size() == 1:
        return [obj]
    store = _store()
    key = _exchange_key("gather")
    store.set(f"{key}/{get_rank()}", json.dumps(obj).encode("utf-8"))
    store.add(f"{key}/count", 1)
    if not is_main_process():
        return None
    while store.add(f"{key}/count", 0) < get_world_size():
        time.sleep(0.05)
    return [json.loads(bytes(store.get(f"{key}/{r}")).decode("utf-8")) for r in range(get_world_size())]


def broadcast_from_main(obj):
    """Rank 0's obj (JSON-serialisable) on every rank, e.g. the metrics only rank 0 computed."""
    if get_world_size() == 1:
        return obj
    store = _store()
    key = _exchange_key("broadcast")
    if is_main_process():
        store.set(key, json.dumps(obj).encode("utf-8"))
        store.add(f"{key}/ready", 1)
        return obj
    while store.add(f"{key}/ready", 0) < 1:
        time.sleep(0.05)
    return json.loads(bytes(store.get(key)).decode("utf-8"))
