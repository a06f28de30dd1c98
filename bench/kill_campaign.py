"""Kill campaign: SIGKILL a run and its evaluation at random moments, resume until done, compare.

    python bench/kill_campaign.py --kills 20 --seed 0 [--work DIR]

On a tiny random Llama (selfreward.testing) with the tests' loop config and a Trainer checkpoint
every 2 steps: first an uninterrupted reference (`selfreward run`, then `selfreward eval`), then
the campaign in another directory, each command a subprocess killed with SIGKILL at the scheduled
moments and started again (`run --resume`, `eval`) until it finishes.

Progress is what a run directory shows: finished record files and models, committed rows of
partial files, Trainer checkpoints. Watching the reference gives the moment each step of progress
appeared; they cut its time into segments. Kill moments are drawn (seeded) on the reference's
clock: one inside each stage kind (SFT, EFT, prompts, candidates, judge, DPO, eval RM judgments,
eval answers, eval head-to-head; while kills last), the rest uniform over the whole reference,
run and eval. A moment t in the segment after progress step k is hit in the campaign t - t_k
seconds after the campaign has reached step k and the current attempt has started work (the
reference segments that start a process include its start-up). Each kill prints the stage it
hit, read from the campaign's files (the first missing record file, its partial rows or Trainer
checkpoints, the manifest's running stage), and the elapsed time.

Finally every *.jsonl under both run directories is compared by id: lost (in the reference, not
in the campaign), duplicated (an id more often than in the reference), differing (same id, other
content). A finished record file cannot show a batch appended twice (a stage keeps one record per
id), so the campaign also reads every `.partial` file at each poll and after each kill, and counts
the ids committed there more than once (the most each file held; a duplicate appended and finished
within one poll, 0.1 s, is missed): they add to `duplicated`. The last line reads
`kills N lost N duplicated N differing N`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import selfreward
from selfreward.records import read_committed, read_jsonl
from selfreward.testing import build_tiny_model, tiny_loop_yaml

OVERRIDES = ["sft.save_steps=2", "dpo.save_steps=2"]  # kills in training resume from a Trainer checkpoint
SHORTEST_AIM = 0.5
"""Stage kinds shorter than this in the reference (pairs: milliseconds) are not aimed at."""
POLL = 0.1
AIFT_KINDS = {"prompts": "prompts", "candidates": "candidates", "judgments": "judge", "pairs": "pairs"}


@dataclass(frozen=True)
class Step:
    """A step of progress: a record file, models/NAME, PATH.partial#ROWS or STAGE/trainer/checkpoint-N."""

    name: str
    at: float
    """Seconds after the reference run started, when the reference showed it."""

    @property
    def phase(self) -> str:
        return "eval" if self.name.startswith("eval/") else "run"

    @property
    def final(self) -> bool:
        return self.name.endswith(".jsonl") or self.name.startswith("models/")


@dataclass
class Attempt:
    phase: str
    number: int
    started: float
    marker: float
    """What shows the attempt's start-up is over: the manifest's attempt count (run) or a time (eval)."""
    ready: float | None = None


def stage_of(step: str) -> tuple[str, str]:
    """(stage, kind) making a step: ("aift1/judge", "judge"), ("dpo1", "dpo"), ("eval rm M2", "eval rm")."""
    parts = Path(step.split("#")[0]).parts
    if parts[0] == "models":
        if parts[1] in ("sft_baseline", "M1"):
            return ("sft_baseline" if parts[1] == "sft_baseline" else "sft"), "sft"
        return f"dpo{int(parts[1][1:]) - 1}", "dpo"
    if len(parts) > 1 and parts[1] == "trainer":
        return parts[0], "dpo" if parts[0].startswith("dpo") else "sft"
    if parts[0] == "eft":
        return "eft", "eft"
    if parts[0].startswith("iter"):
        kind = AIFT_KINDS[parts[1].split(".")[0]]
        return f"{parts[0]}/{kind}", kind
    kind = f"eval {parts[1]}"
    return f"{kind} {parts[-1].split('.')[0]}", kind


def progress_steps(run_dir: Path) -> set[str]:
    """The steps of progress a run directory shows now."""

    def rel(path: Path) -> str:
        return str(path.relative_to(run_dir))

    steps = {rel(p) for p in run_dir.rglob("*.jsonl")}
    steps |= {rel(p.parent) for p in run_dir.glob("models/*/config.json")}
    steps |= {f"{rel(p)}#{len(read_committed(p))}" for p in run_dir.rglob("*.jsonl.partial")}
    steps |= {rel(p.parent) for p in run_dir.glob("*/trainer/checkpoint-*/trainer_state.json")}
    return steps


def partial_duplicates(run_dir: Path) -> dict[str, int]:
    """Per partial file of `run_dir`: its committed rows whose id an earlier committed row has."""
    found = {}
    for path in run_dir.rglob("*.jsonl.partial"):
        try:
            counts = Counter(record_key(row) for row in read_committed(path))
        except FileNotFoundError:
            continue  # its stage finished meanwhile
        found[str(path.relative_to(run_dir))] = sum(n - 1 for n in counts.values())
    return found


def stage_progress(run_dir: Path, step: Step) -> str:
    """What the stage making `step` has saved so far: committed partial rows, or its last Trainer checkpoint."""
    if step.name.startswith("models/"):
        trainer = run_dir / stage_of(step.name)[0] / "trainer"
        checkpoints = sorted(trainer.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        return f"last {checkpoints[-1].name}" if checkpoints else "no checkpoint yet"
    partials = sorted((run_dir / step.name).parent.glob("*.jsonl.partial"))
    return ", ".join(f"{p.name} {len(read_committed(p))} rows" for p in partials) or "no partial rows yet"


def running_stages(run_dir: Path) -> list[str]:
    manifest = run_dir / "manifest.json"
    stages = json.loads(manifest.read_text()).get("stages", {}) if manifest.exists() else {}
    return [name for name, record in stages.items() if record.get("status") == "running"]


def stage_hit(run_dir: Path, steps: list[Step], attempt: Attempt) -> tuple[str, str, str]:
    """(stage, kind, description) of what a run directory was doing, read from its files."""
    missing = next((s for s in steps if s.final and not (run_dir / s.name).exists()), None)
    if missing is None:
        return "finishing", "finishing", "all records written, writing summaries"
    startup = "" if attempt.ready else "start-up, "
    manifest = (
        f"; manifest: {', '.join(running_stages(run_dir)) or 'no stage'} running" if attempt.phase == "run" else ""
    )
    return *stage_of(missing.name), f"{startup}{stage_progress(run_dir, missing)}{manifest}"


class Runner:
    """Runs the commands of a run directory as subprocesses, watching its progress and killing
    them at the scheduled moments of the reference (none for the reference itself)."""

    def __init__(
        self, run_dir: Path, config: Path, env: dict[str, str], log_dir: Path, steps: list[Step], moments: list[float]
    ):
        self.run_dir, self.config, self.env, self.log_dir = run_dir, config, env, log_dir
        self.steps, self.moments = steps, list(moments)
        self.seen: dict[str, float] = {}
        self.attempts: list[Attempt] = []
        self.kills: list[dict[str, str]] = []
        self.started = 0.0
        self.duplicates: dict[str, int] = {}
        """The most ids committed twice each partial file has held (they vanish when their stage finishes)."""

    def check_partials(self) -> None:
        for name, count in partial_duplicates(self.run_dir).items():
            self.duplicates[name] = max(self.duplicates.get(name, 0), count)

    def command(self, phase: str) -> list[str]:
        base = [sys.executable, "-m", "selfreward"]
        if phase == "eval":
            return [*base, "eval", str(self.run_dir)]
        if (self.run_dir / "manifest.json").exists() and (self.run_dir / "config.yaml").exists():
            return [*base, "run", "--resume", str(self.run_dir)]
        return [
            *base,
            "run",
            str(self.config),
            "--out",
            str(self.run_dir),
            *(a for o in OVERRIDES for a in ("--set", o)),
        ]

    def manifest_attempts(self) -> int:
        path = self.run_dir / "manifest.json"
        return len(json.loads(path.read_text()).get("attempts", [])) if path.exists() else 0

    def is_ready(self, attempt: Attempt) -> bool:
        if attempt.phase == "run":
            return self.manifest_attempts() > attempt.marker
        settings = self.run_dir / "eval" / "eval_settings.json"
        return settings.exists() and settings.stat().st_mtime >= attempt.marker

    def steps_before(self, moment: float) -> int:
        return sum(1 for s in self.steps if s.at <= moment)

    def due(self, moment: float, attempt: Attempt, now: float) -> bool:
        """Whether the campaign has reached `moment` of the reference (see the module docstring)."""
        k = self.steps_before(moment)
        if any(s.name in self.seen for s in self.steps[k:]):
            return True  # already past it
        if k and self.steps[k - 1].name not in self.seen:
            return False
        reached, since = (self.seen[self.steps[k - 1].name], self.steps[k - 1].at) if k else (self.started, 0.0)
        starts_process = k == 0 or (k < len(self.steps) and self.steps[k].phase != self.steps[k - 1].phase)
        anchor = attempt.started if starts_process else attempt.ready
        return anchor is not None and now >= max(reached, anchor) + moment - since

    def attempt(self, phase: str) -> int | None:
        """One subprocess; its exit code, or None when it was killed."""
        marker = self.manifest_attempts() if phase == "run" else time.time()
        attempt = Attempt(phase, sum(a.phase == phase for a in self.attempts) + 1, time.time(), marker)
        self.attempts.append(attempt)
        with open(self.log_path(), "w") as log:
            proc = subprocess.Popen(self.command(phase), stdout=log, stderr=subprocess.STDOUT, env=self.env)
            while proc.poll() is None:
                now = time.time()
                self.seen.update({name: now for name in progress_steps(self.run_dir) if name not in self.seen})
                self.check_partials()
                if attempt.ready is None and self.is_ready(attempt):
                    attempt.ready = now
                if self.moments and self.due(self.moments[0], attempt, now):
                    self.kill(proc, attempt, now)
                    return None
                time.sleep(POLL)
        self.seen.update({name: time.time() for name in progress_steps(self.run_dir) if name not in self.seen})
        return proc.returncode

    def log_path(self) -> Path:
        return self.log_dir / f"{self.run_dir.name}-{len(self.attempts):02d}-{self.attempts[-1].phase}.log"

    def kill(self, proc: subprocess.Popen, attempt: Attempt, now: float) -> None:
        stage, kind, described = stage_hit(self.run_dir, self.steps, attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.check_partials()
        moment = self.moments.pop(0)
        aimed = stage_of(self.steps[min(self.steps_before(moment), len(self.steps) - 1)].name)[0]
        self.kills.append({"stage": stage, "kind": kind, "phase": attempt.phase})
        print(
            f"kill {len(self.kills):2d} at {now - self.started:6.1f} s ({attempt.phase} attempt {attempt.number}, {now - attempt.started:5.1f} s in): "
            f"hit {stage} [{described}]; aimed at {moment:.1f} s of the reference ({aimed})",
            flush=True,
        )

    def run(self) -> None:
        self.started = time.time()
        for phase in ("run", "eval"):
            code = None
            while code is None:
                code = self.attempt(phase)
            if code != 0:
                sys.exit(f"{self.run_dir.name} {phase} failed with exit code {code}: see {self.log_path()}")

    def progress(self) -> list[Step]:
        return sorted((Step(name, at - self.started) for name, at in self.seen.items()), key=lambda s: s.at)


def kind_spans(steps: list[Step]) -> dict[str, list[tuple[float, float]]]:
    """Reference time spans per stage kind: from one step of progress to the next."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    previous = 0.0
    for step in steps:
        spans[stage_of(step.name)[1]].append((previous, step.at))
        previous = step.at
    return spans


def moment_in(spans: list[tuple[float, float]], rng: random.Random) -> float:
    x = rng.uniform(0, sum(end - start for start, end in spans))
    for start, end in spans:
        if x <= end - start:
            return start + x
        x -= end - start
    return spans[-1][1]


def kill_schedule(steps: list[Step], total: float, kills: int, rng: random.Random) -> list[float]:
    """Kill moments on the reference clock: one inside each stage kind while kills last, the rest uniform."""
    spans = {kind: s for kind, s in kind_spans(steps).items() if sum(end - start for start, end in s) >= SHORTEST_AIM}
    kinds = rng.sample(sorted(spans), min(kills, len(spans)))
    moments = [moment_in(spans[kind], rng) for kind in kinds]
    moments += [rng.uniform(0, total) for _ in range(kills - len(moments))]
    return sorted(moments)


def record_key(row: dict[str, Any]) -> str:
    return str(row["id"]) if "id" in row else json.dumps(row, sort_keys=True)


def compare_file(reference: Path, campaign: Path) -> dict[str, int]:
    ref_rows = read_jsonl(reference) if reference.exists() else []
    rows = read_jsonl(campaign) if campaign.exists() else []
    ref_by_id = {record_key(r): r for r in ref_rows}
    by_id = {record_key(r): r for r in rows}
    ref_counts, counts = Counter(map(record_key, ref_rows)), Counter(map(record_key, rows))
    return {
        "records": len(ref_rows),
        "lost": sum(1 for key in ref_by_id if key not in by_id),
        "duplicated": sum(max(0, n - max(1, ref_counts[key])) for key, n in counts.items()),
        "differing": sum(1 for key, row in by_id.items() if key in ref_by_id and row != ref_by_id[key]),
        "extra": sum(1 for key in by_id if key not in ref_by_id),
    }


def compare_runs(reference: Path, campaign: Path) -> Counter[str]:
    """Every record file of both runs, by id; prints the files with a difference."""
    names = sorted(
        {str(p.relative_to(reference)) for p in reference.rglob("*.jsonl")}
        | {str(p.relative_to(campaign)) for p in campaign.rglob("*.jsonl")}
    )
    totals: Counter[str] = Counter()
    for name in names:
        found = compare_file(reference / name, campaign / name)
        totals.update(found)
        if any(found[k] for k in ("lost", "duplicated", "differing", "extra")):
            print(f"  {name}: {found}")
    print(
        f"compared {len(names)} record files, {totals['records']} reference records; extra in the campaign: {totals['extra']}"
    )
    leftovers = [str(p.relative_to(campaign)) for p in campaign.rglob("*.partial")]
    print(f"partial files left in the campaign: {leftovers or 'none'}")
    return totals


def weights_digest(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def compare_models(reference: Path, campaign: Path) -> None:
    names = sorted(p.name for p in (reference / "models").iterdir())
    same = [
        n
        for n in names
        if (campaign / "models" / n).is_dir()
        and weights_digest(reference / "models" / n) == weights_digest(campaign / "models" / n)
    ]
    print(
        f"model weights identical to the reference: {', '.join(same) or 'none'}; differing: {', '.join(n for n in names if n not in same) or 'none'}"
    )


def final_line(campaign: Runner, totals: Counter[str]) -> str:
    """The campaign's verdict; ids committed twice in partial files count as duplicated."""
    partial = {name: n for name, n in campaign.duplicates.items() if n}
    print(f"ids committed more than once in partial files: {partial or 'none'}")
    duplicated = totals["duplicated"] + sum(partial.values())
    return f"kills {len(campaign.kills)} lost {totals['lost']} duplicated {duplicated} differing {totals['differing']}"


def summarize_kills(campaign: Runner, steps: list[Step]) -> None:
    hit = Counter(k["kind"] for k in campaign.kills)
    kinds = {stage_of(s.name)[1] for s in steps}
    print(
        f"kills by phase: {dict(Counter(k['phase'] for k in campaign.kills))}; attempts: {dict(Counter(a.phase for a in campaign.attempts))}; "
        f"campaign took {time.time() - campaign.started:.0f} s"
    )
    print(f"kills by stage kind: {dict(sorted(hit.items()))}; kinds never hit: {sorted(kinds - set(hit)) or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="Directory for the model, both runs and the logs (default: a new temporary one).",
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="kill-campaign-"))
    work.mkdir(parents=True, exist_ok=True)
    root = Path(selfreward.__file__).resolve().parents[1]
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    config = work / "tiny.yaml"
    config.write_text(tiny_loop_yaml(build_tiny_model(work / "model")))
    print(f"work directory: {work}", flush=True)
    reference = Runner(work / "reference", config, env, work, [], [])
    reference.run()
    total = time.time() - reference.started
    steps = reference.progress()
    seconds = {kind: round(sum(e - s for s, e in spans), 1) for kind, spans in kind_spans(steps).items()}
    print(
        f"reference: run + eval {total:.1f} s, {len(steps)} steps of progress; seconds per stage kind: {seconds}",
        flush=True,
    )
    moments = kill_schedule(steps, total, args.kills, random.Random(args.seed))
    campaign = Runner(work / "campaign", config, env, work, steps, moments)
    campaign.run()
    summarize_kills(campaign, steps)
    compare_models(reference.run_dir, campaign.run_dir)
    totals = compare_runs(reference.run_dir, campaign.run_dir)
    print(final_line(campaign, totals))


if __name__ == "__main__":
    main()
