"""Shared by every test: each test starts outside any run (runtime.state's process-wide default), so a test
that failed mid-run cannot leak its run.log, warnings or claims into the next one."""
import pytest

from paddle_finetune.reporting.console import reset_console
from paddle_finetune.runtime import state


@pytest.fixture(autouse=True)
def outside_any_run():
    yield
    current = state.current()
    if current.active:  # a run a test left open (an exception between begin and end)
        state.end(current)
    reset_console()
