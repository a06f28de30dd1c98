"""Recipes: each workflow as the steps it runs, in order (read top to bottom, like a paper's algorithm).

- `self_rewarding`: `selfreward run`, Yuan et al. (2024): SFT baseline, EFT, M1, then AIFT(M_t) and DPO per iteration;
- `aift`: `selfreward aift` and the stage commands: one iteration's AIFT data for one model.
"""
