"""Judge prompts that fit the judge's context: the template and the instruction stay whole, the
longest field (the response being judged) is shortened, with a marker, when the whole would not fit."""

from __future__ import annotations

from selfreward.engines.base import Engine, Request
from selfreward.errors import SelfRewardError
from selfreward.prompts import fill, load_template

SHORTENED_MARKER = "\n[... the rest of this response was cut to fit the judge's context ...]"


def template_with(name_or_path: str, fields: tuple[str, ...]) -> str:
    """A template by name or path, checked to hold every field."""
    template = load_template(name_or_path)
    missing = [f"{{{f}}}" for f in fields if f"{{{f}}}" not in template]
    if missing:
        raise SelfRewardError(f"template {name_or_path!r} lacks {' and '.join(missing)}")
    return template


def fitted_request(
    template: str,
    fields: dict[str, str],
    shorten: tuple[str, ...],
    engine: Engine,
    max_new_tokens: int,
    suffix: str = "",
) -> tuple[Request, bool]:
    """The filled template (+ `suffix`) as a user request; when it would not fit the engine's context
    with `max_new_tokens` to spare, each field named in `shorten` is cut to the longest common length
    that fits, and marked. Returns (request, shortened)."""

    def request(limit: int | None) -> Request:
        cut = {
            f: fields[f][:limit].rstrip() + SHORTENED_MARKER
            for f in shorten
            if limit is not None and len(fields[f]) > limit
        }
        return Request.user(fill(template, **(fields | cut)) + suffix)

    whole = request(None)
    room = engine.context_room(whole, max_new_tokens)
    if room is None or room >= 0:
        return whole, False
    kept, too_many = 0, max(len(fields[f]) for f in shorten)  # binary search: the longest heads that fit
    while too_many - kept > 1:
        middle = (kept + too_many) // 2
        fits = engine.context_room(request(middle), max_new_tokens)
        kept, too_many = (middle, too_many) if fits is not None and fits >= 0 else (kept, middle)
    return request(kept), True
