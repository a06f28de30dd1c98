"""A run directory's bookkeeping: its manifest (config, versions, git commit, seed, the start and
end of every stage), its log, its model paths, and the config it is bound to."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from selfreward import __version__
from selfreward.config import Config, build_config, config_differences, config_to_dict, yaml_load
from selfreward.errors import SelfRewardError
from selfreward.records import write_atomic, write_json
from selfreward.steps import EngineCache, Step, Tools, done

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "selfreward")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def refuse_other_config(directory: Path, config: Config, force: bool) -> None:
    """Refuse to continue a directory made with another config, unless forced."""
    path = directory / "config.yaml"
    if path.exists() and not force:
        old = config_to_dict(build_config(yaml_load(path.read_text(encoding="utf-8")) or {}))
        changed = config_differences(old, config_to_dict(config))
        if changed:
            raise SelfRewardError(
                f"{directory} was made with another config (differs in: {', '.join(changed)}); use --force to continue anyway"
            )


def environment() -> dict[str, object]:
    """`selfreward env`: platform, versions, devices and the environment settings that change a run."""
    import torch

    from selfreward.models import cpu_supports_bf16

    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    found: dict[str, object] = {"platform": platform.platform(), **versions(), "git commit": git_commit()}
    found |= {
        "cuda": torch.version.cuda,
        "gpus": ", ".join(gpus) or "none",
        "cpu bf16": cpu_supports_bf16(),
        "torch threads": torch.get_num_threads(),
    }
    for name in ("vllm", "deepspeed", "bitsandbytes", "lm_eval"):
        try:
            found[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            found[name] = None
    settings = ("HF_HUB_OFFLINE", "SELFREWARD_CACHE", "CUDA_VISIBLE_DEVICES", "VLLM_BATCH_INVARIANT", "OMP_NUM_THREADS")
    return found | {name: os.environ.get(name) for name in settings}


def bind_config(directory: Path, config: Config, force: bool = False) -> None:
    """Record the config a directory is made with; refuse to continue it with another one."""
    refuse_other_config(directory, config, force)
    write_atomic(directory / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))


def open_run(directory: Path, config: Config | None, overrides_given: bool, force: bool) -> Config:
    """The config of an existing run; a differing new config is refused unless forced (the run
    records it when it starts: selfreward.recipes.self_rewarding.start binds it)."""
    if not (directory / "manifest.json").exists() or not (directory / "config.yaml").exists():
        raise SelfRewardError(
            f"{directory} is not a selfreward run (no manifest.json/config.yaml); start one with `selfreward run`"
        )
    saved = build_config(yaml_load((directory / "config.yaml").read_text(encoding="utf-8")) or {})
    if config is None or not overrides_given:
        return saved
    refuse_other_config(directory, config, force)
    return config


class Run:
    """A run directory's runner: runs steps unless they are done, and keeps its manifest (with
    `manifest` off, a stage directory of its own: log to the console only) and log."""

    def __init__(self, directory: Path, config: Config, console: Console, manifest: bool = True):
        self.dir = directory
        self.config = config
        self.console = console
        self.tools = Tools(console, EngineCache(config))
        self.manifest_path = directory / "manifest.json" if manifest else None
        self.manifest: dict[str, Any] = {"stages": {}}
        if self.manifest_path is not None:
            self.manifest = (
                json.loads(self.manifest_path.read_text())
                if self.manifest_path.exists()
                else {
                    "selfreward": __version__,
                    "created": now(),
                    "seed": config.seed,
                    "stages": {},
                }
            )
            self.manifest.update({"config": config_to_dict(config), "versions": versions(), "git_commit": git_commit()})
            self.manifest.setdefault("attempts", []).append({"started": now(), "argv": sys.argv})
            self.save()

    def save(self) -> None:
        if self.manifest_path is not None:
            write_json(self.manifest_path, self.manifest)

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False)
        if self.manifest_path is not None:
            with open(self.dir / "run.log", "a", encoding="utf-8") as handle:
                handle.write(f"{now()} {message}\n")

    def model(self, name: str) -> Path:
        return self.dir / "models" / name

    def run(self, step: Step) -> None:
        """Run `step` unless its outputs exist; record its status and times in the manifest."""
        record = self.manifest["stages"].setdefault(step.name, {})
        if not step.outputs():  # a note: the recipe's decision, recorded and told
            stats = step.run(self.tools)
            record.update({"status": stats.get("status", "done"), "at": now()})
            self.save()
            self.log(stats.get("message", f"[{step.name}] {record['status']}"))
            return
        if done(step):
            if record.get("status") != "done":
                record["status"] = "done"
                self.save()
            self.log(f"[{step.name}] already complete, skipped")
            return
        record.update({"status": "running", "started": now()})
        self.save()
        self.log(f"[{step.name}] started{free_gpu_memory()}")
        started = time.perf_counter()
        stats = step.run(self.tools)
        record.update(
            {
                "status": stats.get("status", "done"),
                "ended": now(),
                "seconds": round(time.perf_counter() - started, 1),
                **stats.get("manifest", {}),
            }
        )
        self.save()
        self.log(stats["message"] if "message" in stats else f"[{step.name}] done in {record['seconds']} s")

    def finish(self) -> None:
        self.tools.engines.close()
        self.manifest["finished"] = now()
        self.save()


def free_gpu_memory() -> str:
    """`(GPU free: 75.1 of 79.2 GiB)` when CUDA is in use, so the log shows what each step found free."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return ""
    free = [torch.cuda.mem_get_info(i) for i in range(torch.cuda.device_count())]
    return " (GPU free: " + ", ".join(f"{f / 2**30:.1f} of {t / 2**30:.1f} GiB" for f, t in free) + ")"
