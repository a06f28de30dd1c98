import pytest

from selfreward.config import PRESETS_DIR, load_config, parse_overrides
from selfreward.errors import SelfRewardError


def test_presets_load_and_demo_is_default():
    assert load_config() == load_config("demo")
    paper = load_config("paper")
    # the paper's hyperparameters are the defaults
    assert (paper.candidates.n, paper.candidates.temperature, paper.candidates.top_p) == (4, 0.7, 0.9)
    assert (paper.judge.k, paper.prompts.temperature, paper.prompts.seed_shots, paper.prompts.generated_shots) == (
        3,
        0.6,
        6,
        2,
    )
    assert paper.prompts.rouge_threshold == 0.7
    assert {p.stem for p in PRESETS_DIR.glob("*.yaml")} >= {"demo", "paper"}


def test_overrides_are_parsed_as_yaml():
    cfg = load_config("demo", ["judge.k=5", "data.ift=[a.jsonl, b.jsonl]", "judge.fallback=off"])
    assert cfg.judge.k == 5 and cfg.data.ift == ["a.jsonl", "b.jsonl"] and cfg.judge.fallback == "off"
    assert parse_overrides(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["judge.kk=3"], "unknown key 'judge.kk'"),
        (["nonsense=1"], "unknown key 'nonsense'"),
        (["judge.k=three"], "judge.k"),
        (["candidates.n=1"], "candidates.n"),
        (["judge.fallback=maybe"], "judge.fallback"),
        (["judge"], "section.key=value"),
        (["sft.m1_with_ift=false", "sft.m1_self_distill=true"], "m1_self_distill needs m1_with_ift"),
    ],
)
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(SelfRewardError, match=message.replace(".", r"\.")):
        load_config("demo", overrides)


def test_yaml_file_with_base(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: demo\njudge:\n  k: 2\n")
    cfg = load_config(str(path))
    assert cfg.judge.k == 2 and cfg.prompts.num_prompts == load_config("demo").prompts.num_prompts
    path.write_text("judge:\n  k: [1\n")
    with pytest.raises(SelfRewardError, match="not valid YAML"):
        load_config(str(path))
    with pytest.raises(SelfRewardError, match="unknown preset"):
        load_config("no-such-preset")
    with pytest.raises(SelfRewardError, match="config file not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_every_config_field_is_documented():
    """Every key of every section has a docstring: `selfreward config` prints it, the docs' tables are made from it."""
    from selfreward.config import Section

    def sections(cls: type) -> list[type]:
        return [cls, *(s for sub in cls.__subclasses__() for s in sections(sub))]

    undocumented = [
        f"{cls.__name__}.{name}"
        for cls in sections(Section)
        for name, field in cls.model_fields.items()
        if not field.description
    ]
    assert undocumented == []


def test_the_configuration_reference_is_current():
    """docs/configuration.md is made from the config's docstrings; regenerate it when a key changes:
    python -m selfreward.config_doc > docs/configuration.md"""
    from pathlib import Path

    from selfreward.config_doc import markdown_reference

    assert (Path(__file__).parents[1] / "docs" / "configuration.md").read_text() == markdown_reference()
