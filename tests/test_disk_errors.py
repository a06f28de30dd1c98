"""A full or read-only disk mid-stage: one line naming the file, finished records kept, exact resume."""

import errno
import json
import os

import pytest
from conftest import invoke

from selfreward.records import StageFiles, read_committed, read_jsonl

STAGE_FILES = ("prompts", "candidates", "judgments", "pairs")


@pytest.fixture(scope="module")
def aift_args(tiny_model, tmp_path_factory):
    seed = tmp_path_factory.mktemp("seed") / "seed.jsonl"
    topics = ["bread", "tides", "rainbows", "sorting lists", "volcanoes", "sleep", "tea", "bicycles"]
    seed.write_text(
        "".join(
            json.dumps({"prompt": f"Explain {t} to a curious ten year old.", "response": f"Here is how {t} works."})
            + "\n"
            for t in topics
        )
    )
    overrides = [
        f"model.name_or_path={tiny_model}",
        f"data.ift=[{seed}]",
        "engine.batch_size=4",
        "prompts.num_prompts=3",
        "prompts.requests_per_round=4",
        "prompts.max_rounds=4",
        "prompts.min_words=1",
        "prompts.max_new_tokens=40",
        "prompts.rouge_threshold=0.99",
        "candidates.max_new_tokens=12",
        "judge.max_new_tokens=12",
        "judge.k=2",
        "judge.fallback=fallback",
    ]
    return ["demo", *[arg for item in overrides for arg in ("--set", item)]]


@pytest.fixture(scope="module")
def reference(aift_args, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "aift"
    result = invoke("aift", *aift_args, "--out", out)
    assert result.exit_code == 0, result.output
    return {name: read_jsonl(out / f"{name}.jsonl") for name in STAGE_FILES}


def assert_finished_rows(kept, reference_rows):
    """The records written before the fault are whole and equal to the uninterrupted run's."""
    by_id = {row["id"]: row for row in reference_rows}
    assert kept and all(by_id[row["id"]] == row for row in kept)


def assert_resumes_to_reference(aift_args, out, reference):
    result = invoke("aift", *aift_args, "--out", out)
    assert result.exit_code == 0, result.output
    for name in STAGE_FILES:
        assert read_jsonl(out / f"{name}.jsonl") == reference[name], name


def test_full_disk_mid_stage_names_the_file_keeps_records_and_resumes(aift_args, reference, tmp_path, monkeypatch):
    out = tmp_path / "aift"
    partial = out / "judgments.jsonl.partial"
    real_fsync, synced = os.fsync, []

    def fsync_fails_after_first_batch(fd):  # like a real fsync on a full disk: no file name in the error
        if partial.exists() and os.path.samestat(os.fstat(fd), partial.stat()):
            synced.append(fd)
            if len(synced) > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_fails_after_first_batch)
    result = invoke("aift", *aift_args, "--out", out)
    monkeypatch.undo()
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"error: no space left on device while writing {partial}; free space and run the same command again to resume"
    ]
    kept = read_committed(partial)
    assert 0 < len(kept) < len(reference["judgments"])
    assert_finished_rows(kept, reference["judgments"])
    assert_resumes_to_reference(aift_args, out, reference)


def test_read_only_directory_mid_stage_names_the_file_and_resumes(aift_args, reference, tmp_path, monkeypatch):
    out = tmp_path / "aift"
    real_append, appended = StageFiles.append, []

    def append_fails_after_first_batch(self, rows):  # what open(..., "a") raises once the directory is read-only
        if self.name == "candidates":
            if appended:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self.partial))
            appended.append(len(rows))
        real_append(self, rows)

    monkeypatch.setattr(StageFiles, "append", append_fails_after_first_batch)
    result = invoke("aift", *aift_args, "--out", out)
    monkeypatch.undo()
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"error: read-only file system while writing {out / 'candidates.jsonl.partial'}; make it writable and run the same command again to resume"
    ]
    kept = read_committed(out / "candidates.jsonl.partial")
    assert len(kept) == appended[0]
    assert_finished_rows(kept, reference["candidates"])
    assert_resumes_to_reference(aift_args, out, reference)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory anyway")
def test_chmod_read_only_directory_gives_one_line_and_resumes(aift_args, reference, tmp_path):
    out = tmp_path / "aift"
    assert invoke("prompts", *aift_args, "--out", out).exit_code == 0
    out.chmod(0o555)
    try:
        result = invoke("aift", *aift_args, "--out", out)
    finally:
        out.chmod(0o755)
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: permission denied while writing {out}/") and line.endswith(
        "; make it writable and run the same command again to resume"
    )
    assert_resumes_to_reference(aift_args, out, reference)


def test_run_names_its_resume_command(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("selfreward.recipes.self_rewarding.start", full_disk)
    run_dir = tmp_path / "run"
    result = invoke("run", "--out", run_dir)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: no space left on device while writing in {run_dir}; free space and resume with `selfreward run --resume {run_dir}`"
    ]


def test_other_os_errors_are_not_disguised(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr("selfreward.recipes.self_rewarding.start", broken)
    result = invoke("run", "--out", tmp_path / "run")
    hint = "run with --debug for the traceback (selfreward --debug COMMAND ...)"
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"error: unexpected OSError: [Errno 5] Input/output error; {hint}"]
    debug = invoke("--debug", "run", "--out", tmp_path / "run")
    assert isinstance(debug.exception, OSError) and debug.exception.errno == errno.EIO
