"""Worker entry point for training under `accelerate launch` (`train.accelerate_config`):
`python -m selfreward.launch STAGE_DIR/launch.json` runs the SFT or DPO stage the file describes,
in every worker; the first writes the checkpoint and the stats (selfreward.training)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from selfreward.config import DPOConfig, ModelConfig, SFTConfig
from selfreward.errors import SelfRewardError
from selfreward.records import read_json
from selfreward.stages.dpo import train_dpo_here
from selfreward.stages.sft import train_sft_here


def run_spec(stage: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the stage's arguments from launch.json and train in this worker."""
    model_config = ModelConfig.model_validate(arguments["model_config"])
    stage_dir, target, seed = Path(arguments["stage_dir"]), Path(arguments["target"]), arguments["seed"]
    if stage == "sft":
        examples = [(prompt, completion) for prompt, completion in arguments["examples"]]
        return train_sft_here(model_config, SFTConfig.model_validate(arguments["config"]), arguments["base_model"], examples, stage_dir, target, seed)
    config = DPOConfig.model_validate(arguments["config"])
    return train_dpo_here(model_config, config, arguments["policy"], arguments["reference"], Path(arguments["pairs_file"]), stage_dir, target, seed)


def main(spec_file: str) -> int:
    """0 when trained; 2 after a SelfRewardError, whose line the first worker leaves in
    STAGE_DIR/launch.error for the parent to report."""
    import torch.distributed

    spec = read_json(Path(spec_file))
    try:
        run_spec(spec["stage"], spec["arguments"])
        return 0
    except SelfRewardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if os.environ.get("RANK", "0") == "0":
            (Path(spec["arguments"]["stage_dir"]) / "launch.error").write_text(f"{exc}\n", encoding="utf-8")
        return 2
    finally:
        if torch.distributed.is_initialized():  # gloo aborts at exit while its process group is alive
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
