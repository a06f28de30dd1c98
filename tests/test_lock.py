"""One writer per run directory: a second writer gets one line naming the holder; a killed holder blocks nothing."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import invoke

from selfreward.errors import SelfRewardError
from selfreward.lock import hold_lock

ROOT = Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from pathlib import Path; from selfreward.lock import hold_lock\nwith hold_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(600)"


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path/run; yields (directory, process)."""
    directory = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "locked"
    yield directory, process
    process.kill()
    process.wait()


def test_second_writer_is_refused_and_a_killed_holder_blocks_nothing(holder):
    directory, process = holder
    with pytest.raises(SelfRewardError, match=rf"^{directory} is in use by another selfreward process \(pid {process.pid}\)"), hold_lock(directory):
        pass
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (directory / ".lock").read_text().strip() == str(process.pid)  # the dead holder's pid is still there
    with hold_lock(directory):
        assert (directory / ".lock").read_text() == f"{os.getpid()}\n"


@pytest.mark.parametrize("command", [
    ["aift", "--out", "{dir}"], ["judge", "--out", "{dir}"], ["pairs", "--out", "{dir}"],
    ["run", "--out", "{dir}"], ["run", "--resume", "{dir}"], ["eval", "{dir}"], ["report", "{dir}"],
    ["alpaca", "{dir}", "--prompts", "p.json"], ["mt-bench", "{dir}", "--questions", "q.jsonl"],
])
def test_writing_commands_exit_2_with_one_line_naming_the_holder(holder, command):
    directory, process = holder
    result = invoke(*[str(directory) if arg == "{dir}" else arg for arg in command])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: {directory} is in use by another selfreward process (pid {process.pid}); wait for it to finish or stop it"]
    assert [p.name for p in directory.iterdir()] == [".lock"]


def test_a_failed_start_leaves_no_directory_and_no_lock(tmp_path):
    missing = tmp_path / "not-a-run"
    result = invoke("report", missing)
    assert result.exit_code == 2 and "is not a selfreward run" in result.stderr
    assert not missing.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    assert invoke("eval", existing).exit_code == 2
    with hold_lock(existing):  # released when the command ended
        pass


def test_lock_is_exclusive_within_one_process(tmp_path):
    with hold_lock(tmp_path), pytest.raises(SelfRewardError, match=rf"pid {os.getpid()}"), hold_lock(tmp_path):
        pass


def test_a_lock_file_removed_by_its_previous_holder_is_not_trusted(tmp_path):
    from selfreward.lock import _is_current

    path = tmp_path / ".lock"
    path.write_text("")
    with open(path, "a+") as opened_before_removal:
        assert _is_current(opened_before_removal, path)
        path.unlink()
        assert not _is_current(opened_before_removal, path)
        path.write_text("")  # a new holder's file at the same path
        assert not _is_current(opened_before_removal, path)
