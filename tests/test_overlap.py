"""Disjoint training and evaluation data, decontaminated self-instruct prompts, and the rapidfuzz ROUGE-L."""

from __future__ import annotations

import io
import json

import pytest
from conftest import invoke
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from rouge_score import rouge_scorer

from selfreward.batches import derive_seed
from selfreward.config import DecontaminateConfig, PromptsConfig, load_config
from selfreward.engines.base import Completion, Engine
from selfreward.errors import SelfRewardError
from selfreward.overlap import EvaluationPrompts, RougePool, disjoint_training_data, normalise_prompt, rouge_tokens
from selfreward.records import read_json, read_jsonl, write_json
from selfreward.seed_data import load_ift, load_ranked
from selfreward.stages.eft import build_eft
from selfreward.stages.prompts import PromptFilter, generate_prompts
from selfreward.summary import summarize

IFT = [
    "How do volcanoes form?",
    "Why do cats purr?",
    "What is a prime number?",
    "How does a bicycle stay upright?",
    "Why is the sea salty?",
    "What causes thunder?",
]
RANKED = [
    "Explain photosynthesis simply.",
    "How do magnets work?",
    "What is inflation?",
    "Why do leaves change colour?",
    "How do vaccines work?",
    "What is a black hole?",
]
EVALUATION = ["WHY is the sea   salty?", "What causes thunder?", "How do magnets work?"]  # two IFT prompts, one ranked
COPYING_COMPLETION = (
    " Name three uses of baking soda.\nTask 10: What causes the thunder?\nTask 11: Write a limerick about a cat."
)


def old_rouge_reaches(pool: list[list[str]], tokens: list[str], threshold: float) -> bool:
    """The filter before rapidfuzz: rouge_score's pure-Python LCS against every pooled prompt."""
    return any(rouge_scorer._score_lcs(other, tokens).fmeasure >= threshold for other in pool)


tokens_strategy = st.lists(st.sampled_from("abcde"), max_size=12)


@given(
    pool=st.lists(tokens_strategy, max_size=6),
    tokens=tokens_strategy,
    threshold=st.sampled_from([0.2, 0.25, 0.4, 0.5, 0.6, 0.7, 0.75, 1.0]) | st.floats(0.01, 1.0),
)
def test_rouge_pool_gives_rouge_scores_verdicts(pool, tokens, threshold):
    assert RougePool(pool).reaches(tokens, threshold) == old_rouge_reaches(pool, tokens, threshold)


@pytest.mark.parametrize("threshold", [0.2, 0.4, 0.7])  # 0.2 and 0.4 meet exact F1 ties on these tasks
def test_seed_tasks_keep_the_same_prompts_with_old_and_new_similarity(shared_data, threshold):
    tasks = [
        json.loads(line)["instruction"]
        for line in (shared_data / "self_instruct" / "seed_tasks.jsonl").read_text().splitlines()
    ]
    old_kept: list[list[str]] = []
    new_kept = RougePool()
    for tokens in map(rouge_tokens, tasks):
        if not old_rouge_reaches(old_kept, tokens, threshold):
            old_kept.append(tokens)
        if not new_kept.reaches(tokens, threshold):
            new_kept.add(tokens)
    assert len(tasks) == 175 and len(old_kept) < 175
    assert new_kept.pool == old_kept


def test_evaluation_prompts_catch_copies_and_near_copies():
    prompts = [
        "Explain how vaccines train the immune system to recognise a virus.",
        "List three causes of the French Revolution.",
    ]
    by_rouge = EvaluationPrompts(DecontaminateConfig(), prompts)
    assert by_rouge.copied_by("explain how vaccines train  the immune system to recognise a virus.")
    assert by_rouge.copied_by("Explain how vaccines train the immune system to recognise viruses.")
    assert not by_rouge.copied_by("Explain how the immune system works.")
    by_ngram = EvaluationPrompts(DecontaminateConfig(method="ngram", n=4, threshold=0.5), prompts)
    assert (
        by_ngram.ngram_share(
            rouge_tokens("Explain how vaccines train the immune system to recognise a virus, and give one example.")
        )
        == 8 / 12
    )
    assert by_ngram.copied_by("Three causes of the French?")  # shorter than n: the whole prompt occurs in one
    assert not by_ngram.copied_by("Name three causes of inflation in simple words.")
    assert not by_ngram.copied_by("Explain how vaccines are made, and how the immune system reacts to them.")


def test_prompt_filter_rejects_copies_of_evaluation_prompts():
    flt = PromptFilter(PromptsConfig(), ["Suggest a name for a friendly robot."], EVALUATION)
    assert flt.reason("What causes the thunder?") == "contaminated"
    assert flt.reason("Why is the sea salty?") == "contaminated"
    assert flt.reason("Suggest a name for a friendly robot!") == "duplicate"
    assert flt.reason("Write a limerick about a cat.") is None


class Scripted(Engine):
    """Answers every request with the same text and keeps the requests."""

    name = "scripted"

    def __init__(self, text: str):
        self.text = text
        self.requests: list = []

    def generate(self, requests, sampling, seed):
        self.requests += requests
        return [Completion(self.text, 10) for _ in requests]


def test_prompts_stage_marks_copies_contaminated(tmp_path):
    config = PromptsConfig(num_prompts=2, requests_per_round=1, max_rounds=1, min_words=1)
    stats = generate_prompts(config, Scripted(COPYING_COMPLETION), IFT[:4], EVALUATION, tmp_path, 0, 4)
    assert [r["status"] for r in read_jsonl(tmp_path / "prompts.raw.jsonl")] == ["kept", "contaminated", "kept"]
    assert stats["verdicts"] == {"contaminated": 1, "kept": 2}


@pytest.fixture
def data_files(tmp_path):
    """IFT, ranked and evaluation-prompt files that share prompts; a stand-in model directory."""
    files = {name: tmp_path / f"{name}.jsonl" for name in ("ift", "ranked", "evaluation")}
    files["ift"].write_text("".join(json.dumps({"prompt": p, "response": f"An answer to: {p}"}) + "\n" for p in IFT))
    files["ranked"].write_text(
        "".join(
            json.dumps(
                {"prompt": p, "responses": [{"text": "A careful answer.", "rank": 0}, {"text": "No.", "rank": 1}]}
            )
            + "\n"
            for p in RANKED
        )
    )
    files["evaluation"].write_text(
        "".join(json.dumps({"prompt": p, "response": "Reference."}) + "\n" for p in EVALUATION)
    )
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return files, model


def overrides(files, model, *extra):
    return [
        f"model.name_or_path={model}",
        f"prompts.generator={model}",
        f"data.ift=[{files['ift']}]",
        f"data.ranked=[{files['ranked']}]",
        f"eval.prompts=[{files['evaluation']}]",
        "eft.eval_fraction=0",
        "loop.iterations=0",
        *extra,
    ]


def run_recipe_with_fake_sft(config, run_dir, monkeypatch, settings=None) -> dict[str, list[tuple[str, str]]]:
    """Runs the recipe with SFT replaced by a record of each SFT stage's training examples (and of its
    training settings, in `settings` when given)."""
    from selfreward import steps
    from selfreward.recipes.self_rewarding import self_rewarding, start
    from selfreward.stages.sft import TrainSFT

    trained: dict[str, list[tuple[str, str]]] = {}

    def fake_sft(step, tools):
        trained[step.target.name] = step.examples
        if settings is not None:
            settings[step.target.name] = step.config
        step.target.mkdir(parents=True)
        (step.target / "config.json").write_text("{}")
        write_json(step.stats_file, {"stage": "sft", "examples": len(step.examples)})
        return {"examples": len(step.examples)}

    monkeypatch.setattr(TrainSFT, "run", fake_sft)
    monkeypatch.setattr(
        steps, "make_engine", lambda config, path: Scripted("The answer is clear and helpful. Score: 3")
    )
    runner, data, ranked = start(config, run_dir, Console(file=io.StringIO()))
    for step in self_rewarding(config, runner, data, ranked):
        runner.run(step)
    return trained


def test_ift_prompt_in_an_evaluation_set_trains_on_neither_copy(data_files, tmp_path, monkeypatch):
    files, model = data_files
    run_dir = tmp_path / "run"
    config = load_config("demo", overrides(files, model, "sft.m1_with_ift=true", "sft.m1_self_distill=false"))
    trained = run_recipe_with_fake_sft(config, run_dir, monkeypatch)
    stats = read_json(run_dir / "data.stats.json")
    source = f"eval.prompts {files['evaluation']}"
    assert stats["shared_prompts"] == {
        "data.ift": {"eft-eval": 0, source: 2},
        "eft train": {"eft-eval": 0, source: 1, "data.ift": 0},
    }
    assert f"data: 2 data.ift prompts also in {source}: dropped from data.ift" in (run_dir / "run.log").read_text()
    evaluation = {normalise_prompt(p) for p in EVALUATION}
    assert [p for p, _ in trained["sft_baseline"]] == [p for p in IFT if normalise_prompt(p) not in evaluation]
    eft_examples = read_jsonl(run_dir / "eft" / "train.jsonl")
    assert read_json(run_dir / "eft" / "eft.stats.json")["train_groups_tried"] == stats["eft_train_groups"]["used"] == 5
    assert len(trained["M1"]) == 4 + len(eft_examples) and not any("magnets" in p for p, _ in trained["M1"])
    assert summarize(run_dir)["m1_data"] == "IFT + EFT, 1.5 epochs"


def test_m1_without_ift_trains_on_the_eft_examples_only(data_files, tmp_path, monkeypatch):
    files, model = data_files
    run_dir = tmp_path / "run"
    trained = run_recipe_with_fake_sft(
        load_config("demo", overrides(files, model, "sft.m1_with_ift=false", "sft.m1_self_distill=false")),
        run_dir,
        monkeypatch,
    )
    eft_examples = read_jsonl(run_dir / "eft" / "train.jsonl")
    assert len(eft_examples) > 0 and len(trained["sft_baseline"]) == 4
    assert trained["M1"] == [(e["prompt"], e["completion"]) for e in eft_examples]
    assert summarize(run_dir)["m1_data"] == "EFT, 1.5 epochs"


def test_m1_epochs_set_m1s_dose_and_leave_the_baselines(data_files, tmp_path, monkeypatch):
    files, model = data_files
    config = load_config("demo", overrides(files, model, "sft.m1_epochs=1.25", "sft.epochs=2"))
    settings: dict = {}
    run_recipe_with_fake_sft(config, tmp_path / "run", monkeypatch, settings)
    assert summarize(tmp_path / "run")["m1_data"] == "EFT, 1.25 epochs"
    assert (settings["M1"].epochs, settings["sft_baseline"].epochs) == (1.25, 2)
    unchanged = {"m1_epochs": None}
    assert settings["M1"].model_copy(update={"epochs": 2} | unchanged) == settings["sft_baseline"].model_copy(
        update=unchanged
    )


def test_m1_self_distilled_trains_on_m0s_own_answers_to_the_ift_prompts(data_files, tmp_path, monkeypatch):
    files, model = data_files
    run_dir = tmp_path / "run"
    config = load_config("demo", overrides(files, model, "sft.m1_with_ift=true", "sft.m1_self_distill=true"))
    trained = run_recipe_with_fake_sft(config, run_dir, monkeypatch)
    eft_examples = [(e["prompt"], e["completion"]) for e in read_jsonl(run_dir / "eft" / "train.jsonl")]
    ift_prompts = [p for p, _ in trained["sft_baseline"]]
    assert len(ift_prompts) == 4 and len(eft_examples) > 0
    answer = "The answer is clear and helpful. Score: 3"  # what the scripted M0 writes
    assert trained["M1"] == [(p, answer) for p in ift_prompts] + eft_examples
    stats = read_json(run_dir / "self_distill" / "self_distill.stats.json")
    assert (stats["prompts"], stats["kept"], stats["dropped_unfinished_or_empty"]) == (4, 4, 0)
    assert summarize(run_dir)["m1_data"] == "IFT answered by M0 + EFT, 1.5 epochs"


def writes_nothing(examples: str, stage: str):
    """A step's `run` that finishes with an empty examples file (no answer finished, no judgment agreed)."""

    def run(step, tools):
        step.out_dir.mkdir(parents=True, exist_ok=True)
        (step.out_dir / examples).write_text("")
        write_json(step.out_dir / f"{stage}.stats.json", {"stage": stage, "examples": 0})
        return {"examples": 0}

    return run


def test_m1_self_distilled_without_a_finished_answer_warns_and_trains_on_eft(data_files, tmp_path, monkeypatch):
    from selfreward.stages.self_distill import SelfDistill

    monkeypatch.setattr(SelfDistill, "run", writes_nothing("answers.jsonl", "self_distill"))
    files, model = data_files
    run_dir = tmp_path / "run"
    config = load_config("demo", overrides(files, model, "sft.m1_with_ift=true", "sft.m1_self_distill=true"))
    trained = run_recipe_with_fake_sft(config, run_dir, monkeypatch)
    assert trained["M1"] == [(e["prompt"], e["completion"]) for e in read_jsonl(run_dir / "eft" / "train.jsonl")]
    assert "[self_distill] warning: M0 finished none of its answers" in (run_dir / "run.log").read_text()


def test_self_distill_drops_cut_and_empty_answers(tmp_path):
    from selfreward.stages.self_distill import SelfDistill, distilled_examples
    from selfreward.steps import EngineCache, Tools

    class Mixed(Engine):
        name = "mixed"

        def generate(self, requests, sampling, seed):
            assert sampling.temperature == 0.0 and sampling.max_new_tokens == 7
            written = {"a": Completion("done.", 3), "b": Completion("cut mid", 7, False), "c": Completion("  ", 1)}
            return [written[r.messages[-1][1]] for r in requests]

    cache = EngineCache(load_config("demo"))
    cache.engines = {"m0": Mixed()}
    stats = SelfDistill("self_distill", "m0", ["a", "b", "c"], tmp_path, 7, 0, 2).run(Tools(Console(), cache))
    assert (stats["kept"], stats["dropped_unfinished_or_empty"]) == (1, 2)
    assert distilled_examples(tmp_path) == [("a", "done.")]


def test_m1_without_ift_and_no_eft_example_stops_with_one_line(data_files, tmp_path, monkeypatch):
    from selfreward.stages.eft import BuildEFT

    monkeypatch.setattr(BuildEFT, "run", writes_nothing("train.jsonl", "eft"))
    files, model = data_files
    config = load_config("demo", overrides(files, model, "sft.m1_with_ift=false", "sft.m1_self_distill=false"))
    with pytest.raises(SelfRewardError, match=r"sft\.m1_with_ift is false: M1 has no example"):
        run_recipe_with_fake_sft(config, tmp_path / "run", monkeypatch)


def test_refuse_stops_with_one_line(data_files, tmp_path):
    files, model = data_files
    with pytest.raises(SelfRewardError, match=r"data\.ift & eval\.prompts"):
        config = load_config("demo", overrides(files, model, "data.on_overlap=refuse"))
        disjoint_training_data(config, load_ift(config.data.ift)[0], load_ranked(config.data.ranked)[0])
    run_dir = tmp_path / "refused"
    result = invoke(
        "run",
        "demo",
        "--out",
        run_dir,
        *(a for o in overrides(files, model, "data.on_overlap=refuse") for a in ("--set", o)),
    )
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert (
        f"data.ift & eval.prompts {files['evaluation']}: 2" in result.stderr
        and "eft train & eval.prompts" in result.stderr
    )
    assert not run_dir.exists()


def test_aift_prompts_stage_gets_the_evaluation_prompts(data_files, tmp_path, monkeypatch):
    from selfreward import steps
    from selfreward.recipes import aift

    files, model = data_files
    engine = Scripted(COPYING_COMPLETION)
    monkeypatch.setattr(steps, "make_engine", lambda config, path: engine)
    config = load_config(
        "demo", overrides(files, model, "prompts.num_prompts=2", "prompts.requests_per_round=1", "prompts.min_words=1")
    )
    stats = aift.run_aift(config, tmp_path / "aift", stages=("prompts",), console=Console(file=io.StringIO()))
    assert stats["prompts"]["verdicts"]["contaminated"] == 1
    shots = engine.requests[0].messages[0][1]
    assert "How do volcanoes form?" in shots and "thunder" not in shots and "salty" not in shots


def test_paper_preset_keeps_ift_and_eft_apart(shared_data, tmp_path):
    messages = shared_data / "oasst1" / "oasst1_en_validation_messages.jsonl"
    config = load_config("paper", [f"data.ift=[{messages}]", f"data.ranked=[{messages}]", "data.max_ift=80"])
    ift, _ = load_ift(config.data.ift, config.data.lang)
    ranked, _ = load_ranked(config.data.ranked, config.data.lang)
    assert (
        len({normalise_prompt(e.prompt) for e in ift} & {normalise_prompt(g.prompt) for g in ranked}) > 150
    )  # one pool of prompts
    data = disjoint_training_data(config, ift, ranked)
    strategy = config.eft.model_copy(
        update={"strategy": "rationalize"}
    )  # which groups train does not depend on the strategy
    stats = build_eft(
        strategy,
        config.judge,
        Scripted("The answer is clear and helpful. Score: 3"),
        ranked,
        data.eft_excluded,
        tmp_path,
        derive_seed(config.seed, "eft"),
        8,
    )
    ift_prompts = {normalise_prompt(e.prompt) for e in data.ift}
    train_prompts = {normalise_prompt(g.prompt) for g in data.eft_train}
    eval_prompts = {normalise_prompt(g["prompt"]) for g in read_jsonl(tmp_path / "eval.jsonl")}
    assert len(ift_prompts) == 80 and stats["train_groups_tried"] == len(train_prompts) > 20 and len(eval_prompts) > 20
    assert not ift_prompts & train_prompts and not ift_prompts & eval_prompts and not train_prompts & eval_prompts
