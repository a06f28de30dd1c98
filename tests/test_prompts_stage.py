from selfreward.config import PromptsConfig
from selfreward.stages.prompts import PromptFilter, build_request, parse_tasks


def test_parse_tasks_splits_numbered_tasks_and_cuts_answers():
    completion = " Name three uses of baking soda.\n\nHere are more tasks:\nTask 10: Explain why leaves change colour in autumn.\nAnswer: Chlorophyll breaks down.\n11. Write a limerick about a cat."
    assert parse_tasks(completion, finished=True) == [
        "Name three uses of baking soda.",
        "Explain why leaves change colour in autumn.",
        "Write a limerick about a cat.",
    ]


def test_parse_tasks_drops_a_task_cut_by_the_token_limit():
    assert parse_tasks(" Describe a rainbow.\nTask 10: Explain how a", finished=False) == ["Describe a rainbow."]


def test_filters():
    flt = PromptFilter(PromptsConfig(min_words=3, max_words=20), ["How do I bake a simple loaf of bread at home?"])
    assert flt.reason("Hi there") == "too_short"
    assert flt.reason(" ".join(["word"] * 21)) == "too_long"
    assert flt.reason("Draw a cat sitting on a mat.") == "blacklist"
    assert flt.reason("Describe this image of a sunset.") == "blacklist"
    assert flt.reason("- List three fruits that are red.") == "bad_start"
    assert flt.reason("how do I bake a simple loaf of bread at home") == "duplicate"
    assert flt.reason("How can I bake a simple loaf of bread at home?") == "rouge_similar"
    assert flt.reason("Suggest a name for a friendly robot.") is None
    flt.add("Suggest a name for a friendly robot.")
    assert flt.reason("Suggest a name for a friendly robot!") == "duplicate"


def test_build_request_prefills_the_next_task_number():
    request = build_request("Examples:\n{examples}\nContinue from Task {next}.", ["one task", "another task"])
    assert request.prefix == "Task 3:"
    assert "Task 1: one task\nTask 2: another task" in request.messages[0][1]
    assert "Continue from Task 3." in request.messages[0][1]
