"""The resolved config as YAML with each key's documentation as comments (`selfreward config`)."""

from __future__ import annotations

import typing
from typing import Any

import yaml
from pydantic import BaseModel

from selfreward.config import PRESETS_DIR, Config, preset_names


def _comment(text: str | None, indent: str) -> list[str]:
    return [f"{indent}# {line}".rstrip() for line in text.splitlines()] if text else []


def _key_value(key: str, value: Any) -> str:
    """`key: value` in YAML on one line, lists inline (`[a, b]`), strings quoted where YAML needs it."""
    flow = yaml.safe_dump({key: value}, default_flow_style=True, allow_unicode=True, width=10**6).strip()
    return flow[1:-1]  # `{key: value}` without the braces


def _section_lines(section: BaseModel, indent: str) -> list[str]:
    lines = []
    for key, field in type(section).model_fields.items():
        value = getattr(section, key)
        nested = isinstance(value, BaseModel)
        if nested and not indent:
            lines.append("")
        lines += _comment(field.description or (type(value).__doc__ if nested else None), indent)
        lines += (
            [f"{indent}{key}:", *_section_lines(value, indent + "  ")] if nested else [indent + _key_value(key, value)]
        )
    return lines


def commented_yaml(config: Config, title: str) -> str:
    """`config` as YAML that `load_config` reads back unchanged, each key's docstring above it."""
    header = _comment(
        f"{title}\nEvery key is explained in selfreward/config.py; run with: selfreward run THIS_FILE.yaml", ""
    )
    return "\n".join(header + _section_lines(config, "")) + "\n"


def preset_summaries() -> dict[str, str]:
    """Each preset with the first line of its header comment."""
    out = {}
    for name in preset_names():
        lines = (PRESETS_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines()
        out[name] = next((line.lstrip("# ").strip() for line in lines if line.startswith("#")), "")
    return out


REFERENCE_HEADER = """# Configuration reference

Every key of `selfreward/config.py`, its default and what it does, made from the config's own
docstrings (`python -m selfreward.config_doc > docs/configuration.md`; a test checks this file is
current). Presets (`selfreward config --list`) change some defaults; `selfreward config PRESET`
prints a preset in full with these comments.
"""


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\\\|")


def _default(field: Any) -> str:
    if field.is_required():
        return "(required)"
    return "`" + _key_value("k", field.default).partition(": ")[2] + "`"


def sections_of(annotation: Any) -> list[type[BaseModel]]:
    """The config sections a field holds: its class, or each member of a (tagged, optional) union."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) is typing.Annotated:
        return sections_of(typing.get_args(annotation)[0])
    return [kind for arg in typing.get_args(annotation) for kind in sections_of(arg)]


def _tables(section: type[BaseModel], prefix: str, out: list[str], label: str = "") -> None:
    """A table of `section`'s plain keys under its dotted name, then one per nested section (and per kind of a union)."""
    rows, nested = [], []
    for key, field in section.model_fields.items():
        kinds = sections_of(field.annotation)
        if kinds:
            labels = [f" (kind: {kind.model_fields['kind'].default})" if len(kinds) > 1 else "" for kind in kinds]
            nested += [(f"{prefix}{key}", kind, kind_label) for kind, kind_label in zip(kinds, labels)]
            continue
        rows.append(f"| `{prefix}{key}` | {_cell(_default(field))} | {_cell(field.description or '')} |")
    if rows:
        doc = " ".join((section.__doc__ or "").split()) if section.__doc__ != BaseModel.__doc__ else ""
        out += [
            f"## `{prefix.rstrip('.') or 'top level'}`{label}",
            "",
            *([doc, ""] if doc else []),
            "| key | default | meaning |",
            "|---|---|---|",
            *rows,
            "",
        ]
    for name, kind, kind_label in nested:
        _tables(kind, f"{name}.", out, kind_label)


def markdown_reference() -> str:
    """docs/configuration.md: one table per config section."""
    out = [REFERENCE_HEADER]
    _tables(Config, "", out)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown_reference(), end="")
