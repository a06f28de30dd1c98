"""Worker entry point of training steps in their own processes (`accelerate launch` with
`train.accelerate_config`, or one child process with `train.child_process`): `python -m
selfreward.launch STAGE_DIR/launch.json` rebuilds the step the run wrote there and trains; the
first worker writes the checkpoint and the stats (selfreward.training)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from selfreward.errors import SelfRewardError
from selfreward.records import read_json
from selfreward.stages.dpo import TrainDPO
from selfreward.stages.sft import TrainSFT
from selfreward.training import decode

STEPS = {step.kind: step for step in (TrainSFT, TrainDPO)}


def main(spec_file: str) -> int:
    """0 when trained; 2 after a SelfRewardError, whose line the first worker leaves in
    STAGE_DIR/launch.error for the parent to report."""
    import torch.distributed

    spec = read_json(Path(spec_file))
    step = decode(STEPS[spec["step"]], spec["fields"])
    try:
        step.train_here()
        return 0
    except SelfRewardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if os.environ.get("RANK", "0") == "0":
            (step.stage_dir / "launch.error").write_text(f"{exc}\n", encoding="utf-8")
        return 2
    finally:
        if torch.distributed.is_initialized():  # gloo aborts at exit while its process group is alive
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
