"""`selfreward report RUN_DIR`: report.md and a self-contained report.html (plots embedded as PNG)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from selfreward.display import visible
from selfreward.records import read_json, write_atomic
from selfreward.summary import summarize

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


def gather(run_dir: Path) -> dict[str, Any]:
    """Everything the report shows, from the run's artifacts."""
    summary = summarize(run_dir)
    iterations = []
    for row in summary["iterations"]:
        d = run_dir / f"iter{row['iteration']}"
        iterations.append(row | {"judge": read_json(d / "judgments.stats.json"), "pairs_stats": read_json(d / "pairs.stats.json")})
    return {
        "run_dir": str(run_dir),
        "manifest": read_json(run_dir / "manifest.json"),
        "summary": summary,
        "iterations": iterations,
        "eval": read_json(run_dir / "eval" / "summary.json"),
        "benchmarks": read_json(run_dir / "eval" / "benchmarks.json"),
    }


def tables(data: dict[str, Any]) -> list[Table]:
    out: list[Table] = []
    summary = data["summary"]
    pre = []
    if summary["sft_baseline"]:
        pre.append(["SFT baseline (IFT)", summary["sft_baseline"].get("examples"), summary["sft_baseline"].get("train_loss"), summary["sft_baseline"].get("seconds")])
    if summary["eft"]:
        e = summary["eft"]
        parse = f", judge parse rate {cell(e['judge_parse_rate'])}" if e.get("judge_parse_rate") is not None else ""
        pre.append([f"EFT data ({e.get('strategy', 'self')}: {e.get('train_groups_kept')}/{e.get('train_groups_tried')} groups kept{parse})", e.get("examples"), None, e.get("seconds")])
    if summary["sft"]:
        pre.append(["M1 = SFT (IFT + EFT)", summary["sft"].get("examples"), summary["sft"].get("train_loss"), summary["sft"].get("seconds")])
    out.append(("Before the loop", ["stage", "examples", "train loss", "seconds"], pre))
    out.append((
        "Iterations",
        ["iteration", "model judged", "prompts", "candidates", "judge parse rate", "pairs", "pair yield", "DPO loss", "DPO reward acc", "AIFT s", "DPO s"],
        [[r["iteration"], r["model"], r["prompts_kept"], r["candidates"], r["judge_parse_rate"], r["pairs"], r["pair_yield"], r["dpo_loss"] if r["dpo_loss"] is not None else r.get("dpo_status"), r["dpo_reward_accuracy"], r["aift_seconds"], r["dpo_seconds"]] for r in data["iterations"]],
    ))
    out.append((
        "Iteration health",
        ["iteration", "score histogram (0-5)", "score source", "tie rate", "pairs dropped", "unfinished excluded", "pair yield", "chosen chars", "rejected chars", "mean margin", "margin histogram"],
        [[r["iteration"], "/".join(str(v) for v in r["judge"].get("score_histogram", {}).values()), r["judge"].get("score_source"), r["pairs_stats"].get("tie_rate"), r["pairs_stats"].get("dropped"), r["pairs_stats"].get("unfinished_candidates_excluded"), r["pairs_stats"].get("pair_yield"), r["pairs_stats"].get("mean_chosen_chars"), r["pairs_stats"].get("mean_rejected_chars"), r["pairs_stats"].get("mean_margin"), r["pairs_stats"].get("margin_histogram")] for r in data["iterations"]],
    ))
    rm = data["eval"].get("rm", {})
    for set_name in sorted({s for per_model in rm.values() for s in per_model}):
        out.append((
            f"Reward modelling on {set_name}",
            ["model", "groups", "pairwise acc", "exact match", "5-best", "Spearman", "Kendall tau", "tie rate", "judge parse rate"],
            [[m, v.get("groups"), v.get("pairwise_accuracy"), v.get("exact_match"), v.get("five_best"), v.get("spearman"), v.get("kendall_tau"), v.get("tie_rate"), v.get("judge_parse_rate")] for m, sets in rm.items() if (v := sets.get(set_name))],
        ))
    h2h = data["eval"].get("head_to_head", [])
    if h2h:
        out.append((
            "Head-to-head (both orders, disagreement = tie)",
            ["model", "vs", "judge", "prompts", "win %", "tie %", "lose %", "unparsable verdicts"],
            [[h["model"], h["opponent"], h.get("judge"), h["prompts"], h["win"], h["tie"], h["lose"], h["unparsable_verdicts"]] for h in h2h],
        ))
    answers = data["eval"].get("answers", {})
    if answers:
        out.append(("Answer lengths on the test prompts", ["model", "answers", "mean chars", "mean tokens"], [[m, a.get("answers"), a.get("mean_chars"), a.get("mean_tokens")] for m, a in answers.items()]))
    alpaca = data["benchmarks"].get("alpaca", {})
    if alpaca:
        out.append(("AlpacaEval-style win rate vs reference (ties count half)", ["model", "prompts", "win rate %", "win %", "tie %", "lose %", "mean chars"], [[m, a.get("prompts"), a.get("win_rate"), a.get("win"), a.get("tie"), a.get("lose"), a.get("mean_output_chars")] for m, a in alpaca.items()]))
    mt = data["benchmarks"].get("mt_bench", {})
    if mt:
        out.append(("MT-Bench (single-answer grading, 1-10)", ["model", "score", "turn 1", "turn 2", "unparsable"], [[m, g.get("score"), g.get("score_turn1"), g.get("score_turn2"), g.get("unparsable")] for m, g in mt.items()]))
    return out


def plots(data: dict[str, Any]) -> list[tuple[str, bytes]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = []

    def save(title: str, fig: Any) -> None:
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=90)
        plt.close(fig)
        images.append((title, buffer.getvalue()))

    rm = data["eval"].get("rm", {})
    for set_name in sorted({s for per_model in rm.values() for s in per_model}):
        models = [m for m in rm if set_name in rm[m]]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for key in ("pairwise_accuracy", "exact_match", "spearman", "kendall_tau"):
            ax.plot(models, [rm[m][set_name].get(key) or 0 for m in models], marker="o", label=key)
        ax.set_title(f"Reward modelling ({set_name})")
        ax.legend(fontsize=7)
        save(f"Reward-model metrics per model on {set_name}", fig)
    h2h = data["eval"].get("head_to_head", [])
    if h2h:
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
        save("Head-to-head win / tie / lose", fig)
    if data["iterations"]:
        fig, ax = plt.subplots(figsize=(6, 3))
        width = 0.8 / len(data["iterations"])
        for i, row in enumerate(data["iterations"]):
            hist = row["judge"].get("score_histogram", {})
            ax.bar([int(k) + i * width for k in hist], list(hist.values()), width=width, label=f"AIFT(M{row['iteration']})")
        ax.set_xlabel("judge score (rounded)")
        ax.set_ylabel("judgments")
        ax.legend(fontsize=7)
        ax.set_title("Judge score histogram per iteration")
        save("Judge score histograms", fig)
    answers = data["eval"].get("answers", {})
    if answers or data["iterations"]:
        fig, ax = plt.subplots(figsize=(6, 3))
        names = list(answers) + [f"iter{r['iteration']} chosen" for r in data["iterations"]] + [f"iter{r['iteration']} rejected" for r in data["iterations"]]
        values = [answers[m].get("mean_chars") or 0 for m in answers]
        values += [r["pairs_stats"].get("mean_chosen_chars") or 0 for r in data["iterations"]]
        values += [r["pairs_stats"].get("mean_rejected_chars") or 0 for r in data["iterations"]]
        ax.bar(names, values, color="#5c6bc0")
        ax.set_ylabel("mean characters")
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.set_title("Answer lengths")
        save("Answer lengths", fig)
    return images


def to_markdown(data: dict[str, Any], table_list: list[Table]) -> str:
    lines = [f"# selfreward report: {md_text(data['run_dir'])}", ""]
    manifest = data["manifest"]
    config = manifest.get("config", {})
    lines += [f"- model: {md_text(config.get('model', {}).get('name_or_path'))}; seed {md_text(manifest.get('seed'))}; created {md_text(manifest.get('created'))}; finished {md_text(manifest.get('finished', '-'))}", f"- versions: {md_text(manifest.get('versions', {}))}", ""]
    for title, headers, rows in table_list:
        lines += [f"## {md_text(title)}", ""]
        if not rows:
            lines += ["(nothing yet)", ""]
            continue
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "---|" * len(headers))
        lines += ["| " + " | ".join(md_text(c) for c in row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def to_html(data: dict[str, Any], table_list: list[Table], images: list[tuple[str, bytes]]) -> str:
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
        if not rows:
            parts.append("<p>(nothing yet)</p>")
            continue
        parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(cell(c))}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    if images:
        parts.append("<h2>Plots</h2>")
    for title, png in images:
        parts.append(f"<h3>{esc(cell(title))}</h3><img alt=\"{esc(cell(title))}\" src=\"data:image/png;base64,{base64.b64encode(png).decode()}\">")
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
