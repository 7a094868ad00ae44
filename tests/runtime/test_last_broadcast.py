"""A run's last broadcast: rank 0's process hosts the launcher's TCP store, so it must not exit while a slower rank
still reads rank 0's metrics (a 2-rank do_train=False evaluation under load aborted so, exit -6; here rank 1 reads
5 s late, which failed with "TCP send error ... Broken pipe" before broadcast_from_main waited for every read)."""
import pytest
from launch_helpers import start_ranks, succeeded

PROBE = """
import zlib, time
from paddle_finetune.runtime.environment import record_launch_env
record_launch_env()
from paddle_finetune.runtime.distributed import broadcast_from_main, get_rank, init_distributed
init_distributed()
if get_rank() == 1:
    time.sleep(5)
print("rank", get_rank(), "got", broadcast_from_main({"metrics": 1} if get_rank() == 0 else None), flush=True)
"""


def test_rank_0_waits_for_a_slow_rank_to_read_the_last_broadcast(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE, encoding="utf-8")
    _, _, logs = succeeded(start_ranks([str(probe)], tmp_path / "log").finish(timeout=180))
    assert "rank 1 got {'metrics': 1}" in logs["workerlog.1"]


LEAVING = """
import zlib, sys, time
from paddle_finetune.runtime.environment import record_launch_env
record_launch_env()
from paddle_finetune.runtime.distributed import _store, get_rank, init_distributed, leave_launched_run
init_distributed()
code = int(sys.argv[1])
store = _store()
if get_rank() == 0:
    store.set("probe/value", b"from rank 0")
    print("rank 0 leaving", flush=True)
else:
    time.sleep(3)  # rank 0 is long done with its run; its process must still host the store
    print("rank 1 read", bytes(store.get("probe/value")).decode(), flush=True)
leave_launched_run(code)
print("not reached", flush=True)
"""


@pytest.mark.parametrize("code", [0, 2], ids=["finished", "failed"])
def test_rank_0_leaves_only_after_the_others_are_done_with_its_store(tmp_path, code):
    """leave_launched_run: rank 0 waits for every rank's departure (after a finished run and after a failed one),
    then all leave with the run's exit status and nothing after it runs."""
    probe = tmp_path / "leaving.py"
    probe.write_text(LEAVING, encoding="utf-8")
    returncode, out, logs = start_ranks([str(probe), str(code)], tmp_path / "log").finish(timeout=180)
    assert "rank 1 read from rank 0" in logs["workerlog.1"], (out, logs)
    assert "not reached" not in logs["workerlog.0"] + logs["workerlog.1"]
    assert (returncode == 0) == (code == 0), (returncode, out[-2000:])
