"""The resolved config as YAML with each key's documentation as comments (`selfreward config`)."""

from __future__ import annotations

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
