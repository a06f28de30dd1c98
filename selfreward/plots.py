"""The report's plots (matplotlib, PNG bytes): per-model metrics as grouped bars, per-iteration
judge scores and answer lengths; a plot without data is None (the report names the command that measures it)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

Plot = tuple[str, bytes | None]
"""A title and its PNG, or None when there is nothing to draw yet (the report then says why: `missing`)."""
H2H_TITLE = "Head-to-head win / tie / lose"
ANSWER_LENGTH_TITLE = "Mean answer length on the test prompts per model (tokens)"


def missing(title: str, run_dir: str) -> str:
    """What the report says in place of a plot with nothing to draw: the command that measures it."""
    if title in (H2H_TITLE, ANSWER_LENGTH_TITLE):
        return f"not measured yet: selfreward eval {run_dir}"
    return "nothing yet: the run has not reached this point"


def png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def grouped_bars(groups: list[str], series: dict[str, list[float | None]], title: str, ylabel: str) -> bytes:
    """One cluster of bars per group (a model, an iteration), one bar per series; missing values are left out."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        xs = [g + i * width for g, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width=width, label=label)
    ax.set_xticks(
        [g + 0.4 - width / 2 for g in range(len(groups))], groups, fontsize=7, rotation=30 if len(groups) > 4 else 0
    )
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never over them
    return png(fig)


def rm_plots(rm: dict[str, dict[str, dict[str, Any]]]) -> list[Plot]:
    out: list[Plot] = []
    for set_name in sorted({s for per_model in rm.values() for s in per_model}):
        models = [m for m in rm if set_name in rm[m]]
        series = {
            key: [rm[m][set_name].get(key) for m in models]
            for key in ("pairwise_accuracy", "exact_match", "spearman", "kendall_tau")
        }
        out.append(
            (
                f"Reward-model metrics per model on {set_name}",
                grouped_bars(models, series, f"Reward modelling ({set_name})", "value"),
            )
        )
    return out


def head_to_head_plot(h2h: list[dict[str, Any]]) -> Plot:
    if not h2h:
        return (H2H_TITLE, None)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.5 * len(h2h)))
    labels = [f"{h['model']} vs {h['opponent']}" for h in h2h]
    left = [0.0] * len(h2h)
    for key, color in (("win", "#4caf50"), ("tie", "#bdbdbd"), ("lose", "#e57373")):
        values = [h.get(key) or 0 for h in h2h]
        ax.barh(labels, values, left=left, color=color, label=key)
        left = [a + b for a, b in zip(left, values)]
    ax.set_xlim(0, 100)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Head-to-head (%)")
    return (H2H_TITLE, png(fig))


def iteration_plot(
    iterations: list[dict[str, Any]], title: str, values: Callable[[dict[str, Any]], dict[str, Any]], ylabel: str
) -> Plot:
    """Grouped bars (one per key of `values(row)`) over the iterations that have data; None when none has."""
    rows = [r for r in iterations if any(v is not None for v in values(r).values())]
    if not rows:
        return (title, None)
    missing = [f"AIFT(M{r['iteration']})" for r in iterations if r not in rows]
    groups = [f"AIFT(M{r['iteration']})" for r in rows]
    image = grouped_bars(
        groups, {label: [values(r).get(label) for r in rows] for label in values(rows[0])}, title, ylabel
    )
    return (f"{title}; no data yet for {', '.join(missing)}" if missing else title, image)


def score_counts(row: dict[str, Any]) -> dict[str, Any]:
    """Judgments per point of the judge's scale (the histogram's own keys: 0-5 for the paper's prompt)."""
    return dict(row["judge"].get("score_histogram", {}))


def plots(data: dict[str, Any]) -> list[Plot]:
    import matplotlib

    matplotlib.use("Agg")
    iterations = data["iterations"]
    answers = data["eval"].get("answers", {})
    return [
        *rm_plots(data["eval"].get("rm", {})),
        head_to_head_plot(data["eval"].get("head_to_head", [])),
        iteration_plot(
            iterations, "Judge score histogram per iteration (judgments per rounded score)", score_counts, "judgments"
        ),
        iteration_plot(iterations, "Mean answer length per iteration (tokens)", lambda r: r["lengths"], "mean tokens"),
        (
            ANSWER_LENGTH_TITLE,
            grouped_bars(
                list(answers),
                {"mean tokens": [a.get("mean_tokens") for a in answers.values()]},
                "Answer length per model",
                "mean tokens",
            )
            if answers
            else None,
        ),
    ]
