"""Prompt templates shipped as text files next to this module."""

from pathlib import Path

from selfreward.errors import SelfRewardError

TEMPLATES_DIR = Path(__file__).parent


def load_template(name_or_path: str) -> str:
    """A template by name (a `.txt` file in this folder) or by path."""
    path = TEMPLATES_DIR / f"{name_or_path}.txt"
    if not path.exists():
        path = Path(name_or_path).expanduser()
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in TEMPLATES_DIR.glob("*.txt")))
        raise SelfRewardError(f"template not found: {name_or_path} (built in: {names})")
    return path.read_text(encoding="utf-8").strip()


def fill(template: str, **fields: str) -> str:
    """Replace `{name}` placeholders; unlike str.format, braces inside the values are safe."""
    for name, value in fields.items():
        template = template.replace("{" + name + "}", value)
    return template
