"""Every AIFT stage on a tiny random Llama: artifacts, id links, stats, and exact resume."""

import json

import pytest
from conftest import TINY_AIFT

from selfreward.config import load_config
from selfreward.engines import Request, Sampling, make_engine
from selfreward.errors import SelfRewardError
from selfreward.recipes.aift import run_aift
from selfreward.records import read_jsonl


@pytest.fixture
def seed_file(tmp_path):
    path = tmp_path / "seed.jsonl"
    topics = [
        "bread",
        "tides",
        "rainbows",
        "compound interest",
        "sorting lists",
        "volcanoes",
        "sleep",
        "tea",
        "bicycles",
        "clouds",
    ]
    path.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": f"Explain {t} to a curious ten year old in a few sentences.",
                    "response": f"Here is how {t} works.",
                }
            )
            + "\n"
            for t in topics
        )
    )
    return path


def tiny_config(model_dir, seed_file, *extra):
    return load_config(
        "demo",
        [
            f"model.name_or_path={model_dir}",
            f"data.ift=[{seed_file}]",
            *TINY_AIFT,
            "pairs.min_margin=0.0",
            *extra,
        ],
    )


def test_aift_writes_linked_records_and_stats(tiny_model, seed_file, tmp_path):
    out = tmp_path / "it"
    stats = run_aift(tiny_config(tiny_model, seed_file), out)
    prompts, candidates = read_jsonl(out / "prompts.jsonl"), read_jsonl(out / "candidates.jsonl")
    judgments, pairs = read_jsonl(out / "judgments.jsonl"), read_jsonl(out / "pairs.jsonl")
    assert 1 <= len(prompts) <= 3 and stats["prompts"]["prompts_kept"] == len(prompts)
    assert len(candidates) == 4 * len(prompts) and len(judgments) == 2 * len(candidates)
    assert {c["prompt_id"] for c in candidates} == {p["id"] for p in prompts}
    assert {j["candidate_id"] for j in judgments} == {c["id"] for c in candidates}
    assert all(j["method"] in {"text", "digit_probs"} and 0 <= j["score"] <= 5 for j in judgments)
    finished = {c["id"] for c in candidates if c["finished"]}
    for pair in pairs:
        assert (
            pair["margin"] == pair["chosen_score"] - pair["rejected_score"] > 0 and pair["chosen"] != pair["rejected"]
        )
        assert {pair["chosen_id"], pair["rejected_id"]} <= finished
        assert pair["chosen_source"] == pair["rejected_source"] == "digit_probs" and pair["chosen_judgments"] == 2
    assert stats["pairs"]["unfinished_candidates_excluded"] == len(candidates) - len(finished)
    for stage in ("prompts", "candidates", "judgments", "pairs"):
        assert (out / f"{stage}.stats.json").exists() and not (out / f"{stage}.jsonl.partial").exists()
    assert stats["judge"]["score_source"] == {"digit_probs": len(judgments)}
    assert sum(stats["judge"]["score_histogram"].values()) == len(judgments)
    assert stats["candidates"]["tokens_per_second"] > 0
    assert len(read_jsonl(out / "prompts.raw.jsonl")) >= len(prompts)


class Interrupt(BaseException):
    pass


@pytest.mark.parametrize("when", ["first", "last"])
def test_interrupted_stages_resume_to_identical_records(tiny_model, seed_file, tmp_path, monkeypatch, when):
    from selfreward.engines.hf import HFEngine

    original = HFEngine.generate
    config = tiny_config(tiny_model, seed_file)
    reference = tmp_path / "reference"
    mid_stage_calls, calls = [], {"n": 0}

    def counting(self, requests, sampling, seed):  # which generate() calls run while a stage has committed batches
        calls["n"] += 1
        if any(p.stat().st_size for p in reference.glob("*.jsonl.partial")):
            mid_stage_calls.append(calls["n"])
        return original(self, requests, sampling, seed)

    monkeypatch.setattr(HFEngine, "generate", counting)
    run_aift(config, reference)
    fail_at = mid_stage_calls[0 if when == "first" else -1]
    calls["n"] = 0

    def flaky(self, requests, sampling, seed):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise Interrupt
        return original(self, requests, sampling, seed)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(HFEngine, "generate", flaky)
    with pytest.raises(Interrupt):
        run_aift(config, resumed)
    monkeypatch.setattr(HFEngine, "generate", original)
    assert any(p.stat().st_size for p in resumed.glob("*.jsonl.partial"))
    run_aift(config, resumed)
    for name in ("prompts", "candidates", "judgments", "pairs"):
        assert read_jsonl(resumed / f"{name}.jsonl") == read_jsonl(reference / f"{name}.jsonl"), name


def test_truncated_partial_line_is_dropped_on_resume(tiny_model, seed_file, tmp_path):
    config = tiny_config(tiny_model, seed_file)
    out = tmp_path / "it"
    run_aift(config, out)
    done = (out / "candidates.jsonl").read_text()
    lines = done.splitlines(keepends=True)
    (out / "candidates.jsonl.partial").write_text("".join(lines[:4]) + lines[4][:25])  # a kill mid-write
    for name in ("candidates", "judgments", "pairs"):
        (out / f"{name}.jsonl").unlink()
        (out / f"{name}.stats.json").unlink()
    run_aift(config, out)
    assert (out / "candidates.jsonl").read_text() == done


def test_changed_config_is_refused_unless_forced(tiny_model, seed_file, tmp_path):
    out = tmp_path / "it"
    run_aift(tiny_config(tiny_model, seed_file), out)
    with pytest.raises(SelfRewardError, match=r"differs in: judge\.k"):
        run_aift(tiny_config(tiny_model, seed_file, "judge.k=3"), out)


def test_engine_is_seedable_and_reads_digit_probabilities(tiny_model, seed_file):
    engine = make_engine(tiny_config(tiny_model, seed_file))
    requests = [Request.user("Explain tides."), Request.user("A much longer request about bread and tea and clouds?")]
    sampling = Sampling(temperature=0.7, top_p=0.9, max_new_tokens=8)
    first, again = engine.generate(requests, sampling, seed=1), engine.generate(requests, sampling, seed=1)
    assert [c.text for c in first] == [c.text for c in again]
    assert all(0 < c.num_tokens <= 8 for c in first)
    probs = engine.choice_probs([Request.user("Rate it.", prefix="Fine.\nScore:")], [str(d) for d in range(6)])
    assert len(probs[0]) == 6 and abs(sum(probs[0]) - 1) < 1e-5
