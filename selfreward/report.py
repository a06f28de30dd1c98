"""`selfreward report RUN_DIR`: report.md and a self-contained report.html (plots embedded as PNG)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from selfreward.batches import mean
from selfreward.display import visible
from selfreward.learned import TITLE as LEARNED_TITLE
from selfreward.learned import learning_table
from selfreward.plots import Plot, missing, plots
from selfreward.records import read_json, read_jsonl, write_atomic
from selfreward.summary import iteration_cells, preamble_rows, run_config, summarize, summary_columns

Table = tuple[str, list[str], list[list[Any]]]  # title, headers, rows


def cell(value: Any) -> str:
    """A value as table text; control characters in strings (model output, names) are made visible."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {cell(v)}" for k, v in value.items()) or "-"
    return visible(str(value))


def md_text(value: Any) -> str:
    """A value for report.md: one line, with HTML and table pipes escaped (Markdown viewers render raw HTML)."""
    return html.escape(cell(value), quote=False).replace("|", "\\|").replace("\n", " ")


EXAMPLES_PER_ITERATION = 2
EXAMPLE_CHARS = 400


def gather(run_dir: Path) -> dict[str, Any]:
    """Everything the report shows, from the run's artifacts."""
    summary = summarize(run_dir)
    return {
        "run_dir": str(run_dir),
        "manifest": read_json(run_dir / "manifest.json"),
        "columns": summary_columns(run_config(run_dir)),
        "summary": summary,
        "iterations": [
            row
            | iteration_details(run_dir / f"iter{row['iteration']}")
            | {"select": read_json(run_dir / f"dpo{row['iteration']}" / "select.stats.json")}
            for row in summary["iterations"]
        ],
        "eval": read_json(run_dir / "eval" / "summary.json"),
        "learned": learning_table(run_dir),
        "benchmarks": read_json(run_dir / "eval" / "benchmarks.json"),
    }


def iteration_details(iter_dir: Path) -> dict[str, Any]:
    """Whatever stats the stages of one iteration wrote, answer lengths and a few pairs."""
    stats = {path.name.removesuffix(".stats.json"): read_json(path) for path in sorted(iter_dir.glob("*.stats.json"))}
    candidates = rows_of(iter_dir / "candidates.jsonl")
    actor = [p for p in rows_of(iter_dir / "pairs.jsonl") if p.get("kind", "actor") == "actor"]
    return {
        "stats": stats,
        "judge": stats.get("judgments", {}),
        "pairs_stats": stats.get("pairs", {}),
        "lengths": answer_tokens(candidates, actor),
        "examples": actor[:EXAMPLES_PER_ITERATION],
    }


def rows_of(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path) if path.exists() else []


def answer_tokens(candidates: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Mean length in tokens of the chosen, the rejected and all candidate answers."""
    tokens = {c.get("id"): c["num_tokens"] for c in candidates if isinstance(c.get("num_tokens"), int)}
    return {
        "chosen": mean([tokens[p["chosen_id"]] for p in pairs if p.get("chosen_id") in tokens]),
        "rejected": mean([tokens[p["rejected_id"]] for p in pairs if p.get("rejected_id") in tokens]),
        "candidates": mean(list(tokens.values())),
    }


def policy_name(pairs_stats: dict[str, Any]) -> str:
    """`max_min`, or `length_control (rho 0.32)`: the pair policy a pairs stage recorded."""
    policy = pairs_stats.get("policy") or {"name": "max_min"}
    if isinstance(policy, str):
        return policy
    return policy["name"] + (f" (rho {policy['rho']:g})" if policy.get("rho") is not None else "")


def shortened(text: Any) -> str:
    text = str(text or "")
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + " [...]"


def tables(data: dict[str, Any]) -> list[Table]:
    headers, rows, _ = data["learned"]
    return [(LEARNED_TITLE, headers, rows), preamble(data["summary"]), *iteration_tables(data), *eval_tables(data)]


def preamble(summary: dict[str, Any]) -> Table:
    return ("Before the loop", ["stage", "examples", "result", "seconds"], preamble_rows(summary))


def iteration_tables(data: dict[str, Any]) -> list[Table]:
    rows = data["iterations"]
    out: list[Table] = [
        ("Iterations", [c.title for c in data["columns"]], [iteration_cells(r, data["columns"]) for r in rows]),
        (
            "Iteration health",
            [
                "iteration",
                "score histogram (0-5)",
                "score source",
                "tie rate",
                "pairs dropped",
                "unfinished excluded",
                "pair yield",
                "chosen chars",
                "rejected chars",
                "mean margin",
                "margin histogram",
            ],
            [
                [
                    r["iteration"],
                    "/".join(str(v) for v in r["judge"].get("score_histogram", {}).values()),
                    r["judge"].get("score_source"),
                    r["pairs_stats"].get("tie_rate"),
                    r["pairs_stats"].get("dropped"),
                    r["pairs_stats"].get("unfinished_candidates_excluded"),
                    r["pairs_stats"].get("pair_yield"),
                    r["pairs_stats"].get("mean_chosen_chars"),
                    r["pairs_stats"].get("mean_rejected_chars"),
                    r["pairs_stats"].get("mean_margin"),
                    r["pairs_stats"].get("margin_histogram"),
                ]
                for r in rows
            ],
        ),
        (
            "Answer length and judge saturation",
            [
                "iteration",
                "pair policy",
                "chosen tokens",
                "rejected tokens",
                "candidate tokens",
                "judgments",
                "top-score share",
                "mean score",
            ],
            [
                [
                    r["iteration"],
                    policy_name(r["pairs_stats"]) if r["pairs_stats"] else None,
                    r["lengths"]["chosen"],
                    r["lengths"]["rejected"],
                    r["lengths"]["candidates"],
                    r["judge"].get("judgments"),
                    r["judge"].get("top_score_share"),
                    r["judge"].get("mean_score"),
                ]
                for r in rows
            ],
        ),
    ]
    meta = [(r["iteration"], m) for r in rows if (m := r["stats"].get("meta"))]
    if meta:
        out.append(
            (
                "Meta-judge (wins minus losses; disagreement between orders = tie)",
                [
                    "iteration",
                    "prompts",
                    "comparisons",
                    "order agreement",
                    "first position wins",
                    "unparsable verdicts",
                    "judge pairs",
                    "judge pair share",
                    "scores judged (0-5)",
                    "chosen judgment scores",
                    "rejected judgment scores",
                ],
                [
                    [
                        t,
                        m.get("prompts_meta_judged"),
                        m.get("comparisons"),
                        m.get("order_agreement"),
                        m.get("first_position_win_rate"),
                        m.get("unparsable_verdicts"),
                        m.get("judge_pairs"),
                        m.get("judge_pair_share"),
                        m.get("score_histogram"),
                        m.get("chosen_score_histogram"),
                        m.get("rejected_score_histogram"),
                    ]
                    for t, m in meta
                ],
            )
        )
    selections = [(r["iteration"], r["select"]) for r in rows if r["select"]]
    if selections:
        out.append(
            (
                "Checkpoint selection (win rate vs M_t = wins + ties/2; both orders, disagreement = tie)",
                [
                    "iteration",
                    "candidate",
                    "step",
                    "judge",
                    "prompts",
                    "win %",
                    "tie %",
                    "lose %",
                    "win rate %",
                    "unparsable verdicts",
                    "promoted",
                ],
                [
                    [
                        t,
                        c["name"],
                        c["step"],
                        s["judge"]["model"],
                        c["prompts"],
                        c["win"],
                        c["tie"],
                        c["lose"],
                        c["win_rate"],
                        c["unparsable_verdicts"],
                        f"M{t + 1}" if c["name"] == s["chosen"] else "",
                    ]
                    for t, s in selections
                    for c in s["candidates"]
                ],
            )
        )
    out.append(
        (
            "Chosen and rejected examples",
            ["iteration", "prompt", "chosen", "rejected", "margin"],
            [
                [
                    r["iteration"],
                    shortened(p.get("prompt")),
                    shortened(p.get("chosen")),
                    shortened(p.get("rejected")),
                    p.get("margin"),
                ]
                for r in rows
                for p in r["examples"]
            ],
        )
    )
    return out


def eval_tables(data: dict[str, Any]) -> list[Table]:
    out: list[Table] = []
    rm = data["eval"].get("rm", {})
    for set_name in sorted({s for per_model in rm.values() for s in per_model}):
        out.append(
            (
                f"Reward modelling on {set_name}",
                [
                    "model",
                    "groups",
                    "pairwise acc",
                    "exact match",
                    "5-best",
                    "Spearman",
                    "Kendall tau",
                    "tie rate",
                    "judge parse rate",
                ],
                [
                    [
                        m,
                        v.get("groups"),
                        v.get("pairwise_accuracy"),
                        v.get("exact_match"),
                        v.get("five_best"),
                        v.get("spearman"),
                        v.get("kendall_tau"),
                        v.get("tie_rate"),
                        v.get("judge_parse_rate"),
                    ]
                    for m, sets in rm.items()
                    if (v := sets.get(set_name))
                ],
            )
        )
    h2h = data["eval"].get("head_to_head", [])
    if h2h:
        out.append(
            (
                "Head-to-head (both orders, disagreement = tie)",
                ["model", "vs", "judge", "prompts", "win %", "tie %", "lose %", "unparsable verdicts"],
                [
                    [
                        h["model"],
                        h["opponent"],
                        h.get("judge"),
                        h["prompts"],
                        h["win"],
                        h["tie"],
                        h["lose"],
                        h["unparsable_verdicts"],
                    ]
                    for h in h2h
                ],
            )
        )
    answers = data["eval"].get("answers", {})
    if answers:
        out.append(
            (
                "Answer lengths on the test prompts",
                ["model", "answers", "mean chars", "mean tokens"],
                [[m, a.get("answers"), a.get("mean_chars"), a.get("mean_tokens")] for m, a in answers.items()],
            )
        )
    alpaca = data["benchmarks"].get("alpaca", {})
    if alpaca:
        out.append(
            (
                "AlpacaEval-style win rate vs reference (ties count half)",
                ["model", "prompts", "win rate %", "win %", "tie %", "lose %", "mean chars"],
                [
                    [
                        m,
                        a.get("prompts"),
                        a.get("win_rate"),
                        a.get("win"),
                        a.get("tie"),
                        a.get("lose"),
                        a.get("mean_output_chars"),
                    ]
                    for m, a in alpaca.items()
                ],
            )
        )
    mt = data["benchmarks"].get("mt_bench", {})
    if mt:
        out.append(
            (
                "MT-Bench (single-answer grading, 1-10)",
                ["model", "score", "turn 1", "turn 2", "unparsable"],
                [
                    [m, g.get("score"), g.get("score_turn1"), g.get("score_turn2"), g.get("unparsable")]
                    for m, g in mt.items()
                ],
            )
        )
    return out


def to_markdown(data: dict[str, Any], table_list: list[Table]) -> str:
    lines = [f"# selfreward report: {md_text(data['run_dir'])}", ""]
    manifest = data["manifest"]
    config = manifest.get("config", {})
    lines += [
        (
            f"- model: {md_text(config.get('model', {}).get('name_or_path'))}; seed {md_text(manifest.get('seed'))}; "
            f"created {md_text(manifest.get('created'))}; finished {md_text(manifest.get('finished', '-'))}"
        ),
        f"- versions: {md_text(manifest.get('versions', {}))}",
        "",
    ]
    for title, headers, rows in table_list:
        lines += [f"## {md_text(title)}", ""]
        if title == LEARNED_TITLE:
            lines += [f"- {md_text(note)}" for note in data["learned"][2]] + ([""] if data["learned"][2] else [])
        if not rows:
            lines += ["(none yet)", ""]
            continue
        lines.append("| " + " | ".join(md_text(h) for h in headers) + " |")
        lines.append("|" + "---|" * len(headers))
        lines += ["| " + " | ".join(md_text(c) for c in row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def to_html(data: dict[str, Any], table_list: list[Table], images: list[Plot]) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>selfreward report: {esc(cell(data['run_dir']))}</title>",
        (
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%;display:block;margin:.5em 0 1.5em}</style>"
        ),
        "</head><body>",
        (
            f"<h1>selfreward report</h1><p>Run: <code>{esc(cell(data['run_dir']))}</code>; model <code>{esc(cell(data['manifest'].get('config', {}).get('model', {}).get('name_or_path')))}</code>; "
            f"created {esc(cell(data['manifest'].get('created')))}, finished {esc(cell(data['manifest'].get('finished', '-')))}.</p>"
        ),
    ]
    for title, headers, rows in table_list:
        parts.append(f"<h2>{esc(cell(title))}</h2>")
        if title == LEARNED_TITLE:
            parts += [f"<p>{esc(cell(note))}</p>" for note in data["learned"][2]]
        if not rows:
            parts.append("<p>(none yet)</p>")
            continue
        parts.append("<table><tr>" + "".join(f"<th>{esc(cell(h))}</th>" for h in headers) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(cell(c))}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    parts.append("<h2>Plots</h2>")
    for title, png in images:
        parts.append(f"<h3>{esc(cell(title))}</h3>")
        parts.append(
            f'<img alt="{esc(cell(title))}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            if png
            else f"<p>{esc(missing(title, cell(data['run_dir'])))}</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(run_dir: Path) -> tuple[Path, Path]:
    data = gather(run_dir)
    table_list = tables(data)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    write_atomic(md_path, to_markdown(data, table_list))
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):  # names with `$` are labels, not TeX
        images = plots(data)
    write_atomic(html_path, to_html(data, table_list, images))
    return md_path, html_path
