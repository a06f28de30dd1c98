"""`selfreward config`: the resolved config as documented YAML that loads back; `train.report_to`."""

import pytest
from conftest import invoke

from selfreward.config import Config, Section, load_config, preset_names
from selfreward.errors import SelfRewardError
from selfreward.training import trainer_arguments

OVERRIDES = [
    "judge.k=5",
    "judge.fallback=off",
    "judge.template='a: b, {c}'",
    "data.ift=[x y.jsonl, 'z: 1']",
    "eft.max_groups=7",
]


@pytest.mark.parametrize("preset", preset_names())
def test_printed_config_loads_back_unchanged(preset, tmp_path):
    sets = [arg for item in OVERRIDES for arg in ("--set", item)]
    result = invoke("config", preset, *sets)
    assert result.exit_code == 0, result.output
    path = tmp_path / "printed.yaml"
    path.write_text(result.stdout)
    assert load_config(str(path)) == load_config(preset, OVERRIDES)


def documented_fields(model: type, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, description) of every documented leaf key of a config model."""
    out = []
    for key, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            out += documented_fields(field.annotation, f"{prefix}{key}.")
        elif field.description:
            out.append((f"{prefix}{key}", field.description))
    return out


def test_every_docstring_is_a_comment_right_above_its_key():
    lines = invoke("config", "demo").stdout.splitlines()
    documented = documented_fields(Config)
    assert len(documented) > 40 and ("judge.k", "Judgments per candidate; valid scores are averaged.") in documented
    for key, description in documented:
        *sections, name = key.split(".")
        indent = "  " * len(sections)
        start = 0
        for depth, section in enumerate(sections):  # the key inside its own section, not a same-named key elsewhere
            start = lines.index(f"{'  ' * depth}{section}:", start)
        at = next(i for i in range(start, len(lines)) if lines[i].startswith(f"{indent}{name}:"))
        comment = [f"{indent}# {line}".rstrip() for line in description.splitlines()]
        assert lines[at - len(comment) : at] == comment, key


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("judge.kk=3", "error: config error: unknown key 'judge.kk'"),
        ("judge.k=three", "error: config error: judge.k: Input should be a valid integer"),
        ("dpo.report_to=[mlflow]", "error: config error: dpo.report_to.0: Input should be 'tensorboard' or 'wandb'"),
    ],
)
def test_bad_key_or_value_is_one_line(override, message):
    result = invoke("config", "demo", "--set", override)
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(message)


def test_report_to_missing_package_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.setattr("selfreward.config.find_spec", lambda name: None)
    with pytest.raises(
        SelfRewardError, match=r"^config error: sft\.report_to: wandb is not installed \(pip install wandb\)"
    ):
        load_config("demo", ["sft.report_to=wandb"])
    result = invoke("run", "--set", "dpo.report_to=[tensorboard]", "--out", tmp_path / "run")
    assert result.exit_code == 2 and result.stderr.startswith(
        "error: config error: dpo.report_to: tensorboard is not installed"
    )
    assert not (tmp_path / "run").exists()


def test_report_to_reaches_the_trainer_arguments(monkeypatch, tmp_path):
    installed = {"tensorboardX", "wandb"}
    monkeypatch.setattr("selfreward.config.find_spec", lambda name: name if name in installed else None)
    config = load_config("demo", ["sft.report_to=tensorboard", "dpo.report_to=[tensorboard, wandb]"])
    assert trainer_arguments(config.sft, tmp_path, 0, "cpu")["report_to"] == ["tensorboard"]
    assert trainer_arguments(config.dpo, tmp_path, 0, "cpu")["report_to"] == ["tensorboard", "wandb"]
    assert trainer_arguments(load_config("demo", ["sft.report_to=none"]).sft, tmp_path, 0, "cpu")["report_to"] == "none"
