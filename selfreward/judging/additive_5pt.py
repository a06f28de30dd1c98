"""The paper's judge: the additive 5-point prompt (Yuan et al., 2024, Figure 2), `Score: N` with N in 0-5."""

from selfreward.judging.scale import Scale

ADDITIVE_5PT = Scale("additive_5pt", template="judge_additive_5pt", label="Score", lowest=0, highest=5)
