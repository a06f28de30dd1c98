"""Where the benches find the shared data set beside the repository (../shared/data), from any working directory."""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OASST1_VALIDATION_GROUPS = SHARED_DATA / "oasst1" / "oasst1_en_validation_ranked_groups.jsonl"
SELF_INSTRUCT_TASKS = SHARED_DATA / "self_instruct" / "seed_tasks.jsonl"
