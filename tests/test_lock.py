"""One writer per run directory: a second writer gets one line naming the holder; a killed holder blocks nothing;
a lock path that is a link or not a regular file is refused, never written through."""

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
    with (
        pytest.raises(
            SelfRewardError, match=rf"^{directory} is in use by another selfreward process \(pid {process.pid}\)"
        ),
        hold_lock(directory),
    ):
        pass
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (directory / ".lock").read_text().strip() == str(process.pid)  # the dead holder's pid is still there
    with hold_lock(directory):
        assert (directory / ".lock").read_text() == f"{os.getpid()}\n"


@pytest.mark.parametrize(
    "command",
    [
        ["aift", "--out", "{dir}"],
        ["judge", "--out", "{dir}"],
        ["pairs", "--out", "{dir}"],
        ["run", "--out", "{dir}"],
        ["run", "--resume", "{dir}"],
        ["eval", "{dir}"],
        ["report", "{dir}"],
        ["alpaca", "{dir}", "--prompts", "p.json"],
        ["mt-bench", "{dir}", "--questions", "q.jsonl"],
    ],
)
def test_writing_commands_exit_2_with_one_line_naming_the_holder(holder, command):
    directory, process = holder
    result = invoke(*[str(directory) if arg == "{dir}" else arg for arg in command])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"error: {directory} is in use by another selfreward process (pid {process.pid}); wait for it to finish or stop it"
    ]
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
        assert _is_current(opened_before_removal.fileno(), path)
        path.unlink()
        assert not _is_current(opened_before_removal.fileno(), path)
        path.write_text("")  # a new holder's file at the same path
        assert not _is_current(opened_before_removal.fileno(), path)


WRITING_COMMANDS = [
    *([stage, "--out", "{dir}"] for stage in ("aift", "prompts", "candidates", "judge", "pairs", "meta")),
    ["run", "--out", "{dir}"],
    ["run", "--resume", "{dir}"],
    ["eval", "{dir}"],
    ["ifeval", "{dir}"],
    ["report", "{dir}"],
]
NOT_THROUGH_IT = "not a lock file; selfreward will not write through it: remove it and run the command again"


def invoke_in(directory: Path, command: list[str]):
    return invoke(*[str(directory) if arg == "{dir}" else arg for arg in command])


def snapshot(path: Path) -> tuple[bytes, int, int]:
    info = path.stat()
    return path.read_bytes(), info.st_mtime_ns, info.st_size


@pytest.mark.parametrize("command", WRITING_COMMANDS)
def test_a_symlinked_lock_is_refused_and_its_target_survives(tmp_path, command):
    target = tmp_path / "someone-elses-file.txt"
    target.write_text("precious data\n")
    before = snapshot(target)
    directory = tmp_path / "out"
    directory.mkdir()
    (directory / ".lock").symlink_to(target)
    result = invoke_in(directory, command)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: {directory / '.lock'} is a symbolic link, {NOT_THROUGH_IT}"]
    assert snapshot(target) == before and (directory / ".lock").is_symlink()
    assert [p.name for p in directory.iterdir()] == [".lock"]


def test_a_dangling_link_a_hard_link_a_directory_and_a_fifo_are_refused(tmp_path):
    directory = tmp_path / "out"
    directory.mkdir()
    lock = directory / ".lock"
    missing = tmp_path / "created-through-the-link"
    lock.symlink_to(missing)
    with pytest.raises(SelfRewardError, match="is a symbolic link"), hold_lock(directory):
        pass
    assert not missing.exists()
    lock.unlink()
    other = tmp_path / "other.txt"
    other.write_text("keep\n")
    os.link(other, lock)
    with pytest.raises(SelfRewardError, match="is a hard link to another file"), hold_lock(directory):
        pass
    assert other.read_text() == "keep\n"
    lock.unlink()
    lock.mkdir()
    with pytest.raises(SelfRewardError, match="is a directory or a socket"), hold_lock(directory):
        pass
    lock.rmdir()
    os.mkfifo(lock)
    with pytest.raises(SelfRewardError, match="is not a regular file, not a lock file"), hold_lock(directory):
        pass


def test_a_refused_resume_leaves_no_lock(tmp_path):
    directory = tmp_path / "not-a-run"
    directory.mkdir()
    (directory / "notes.txt").write_text("mine\n")
    result = invoke("run", "--resume", directory)
    assert result.exit_code == 2 and "is not a selfreward run" in result.stderr
    assert [p.name for p in directory.iterdir()] == ["notes.txt"]


def test_a_lock_held_before_is_kept_when_a_command_fails(tmp_path):
    directory = tmp_path / "run"
    with hold_lock(directory), open(directory / "work", "w"):
        pass
    assert (directory / ".lock").exists()  # a finished command keeps its lock file (the next one reuses it)
    with pytest.raises(RuntimeError), hold_lock(directory):
        raise RuntimeError("failed")
    assert (directory / ".lock").exists()  # not created by the failed call: not removed


@pytest.mark.parametrize(
    "command",
    [
        ["pairs", "--out", "{dir}"],
        ["run", "--out", "{dir}"],
        ["eval", "{dir}"],
        ["report", "{dir}"],
    ],
)
def test_an_output_path_that_is_a_file_is_one_line(tmp_path, command):
    path = tmp_path / "a-file"
    path.write_text("not a directory\n")
    result = invoke_in(path, command)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"error: {path} is not a directory: give a directory for the command's output"
    ]
    assert path.read_text() == "not a directory\n"
    below = invoke("pairs", "--out", path / "below")
    assert below.exit_code == 2
    assert below.stderr.splitlines() == [f"error: cannot create the directory {path / 'below'}: a file is in the way"]
