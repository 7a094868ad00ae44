"""A run's last broadcast: rank 0's process hosts the launcher's TCP store, so it must not exit while a slower rank
still reads rank 0's metrics (a 2-rank do_train=False evaluation under load aborted so, exit -6; here rank 1 reads
5 s late, which failed with "TCP send error ... Broken pipe" before broadcast_from_main waited for every read)."""
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
