"""Training data kept apart from evaluation data, and near copies of evaluation prompts.

Training sets: the IFT examples (`data.ift`) and the EFT training groups (`data.ranked` minus the
EFT eval split). Evaluation sets: the EFT eval split, `eval.ranked`, the `eval.prompts` sources
other than `eft-eval`, and `eft.exclude_prompts_from`. Prompts are compared normalised (lower
case, whitespace collapsed). A training prompt that is also an evaluation prompt is dropped from
training, so neither copy is trained on, or stops the run (`data.on_overlap`). EFT training also
drops the prompts used for IFT: the `paper` preset draws both from oasst1's train split.

`EvaluationPrompts` tells the prompts stage whether a self-instruct prompt copies or nearly copies
an evaluation prompt (`prompts.decontaminate`). ROUGE-L is rouge_score's, on its tokens, with the
longest common subsequence from rapidfuzz.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rapidfuzz import process
from rapidfuzz.distance import Indel
from rouge_score import tokenizers

from selfreward.batches import derive_seed
from selfreward.config import Config, DecontaminateConfig
from selfreward.errors import SelfRewardError
from selfreward.records import read_jsonl
from selfreward.seed_data import DEMO_FILES, IFTExample, RankedGroup, load_groups, load_ift


def normalise_prompt(text: str) -> str:
    return " ".join(text.lower().split())


def split_groups(
    groups: list[RankedGroup], eval_fraction: float, seed: int
) -> tuple[list[RankedGroup], list[RankedGroup]]:
    """Deterministic split by prompt text: the same prompt always lands on the same side."""
    train: list[RankedGroup] = []
    held_out: list[RankedGroup] = []
    for group in groups:
        side = derive_seed(seed, "eft-split:" + group.prompt) / 2**31 < eval_fraction
        (held_out if side else train).append(group)
    return train, held_out


def group_rows(groups: list[RankedGroup]) -> list[dict[str, Any]]:
    return [
        {
            "id": f"g{i:05d}",
            "source_id": g.group_id,
            "prompt": g.prompt,
            "responses": [{"text": r.text, "rank": r.rank, "quality": r.quality} for r in g.responses],
        }
        for i, g in enumerate(groups)
    ]


TOKENIZER = tokenizers.DefaultTokenizer(use_stemmer=False)
CUTOFF_SLACK = 1e-4
"""rapidfuzz's score_cutoff only pre-selects; the verdict uses rouge_score's own F1 arithmetic."""


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's tokens: lower-cased runs of a-z and 0-9."""
    return TOKENIZER.tokenize(text)


def rouge_l_f1(reference: list[str], candidate: list[str]) -> float:
    """ROUGE-L F1 with rouge_score's float operations; LCS = (|a| + |b| - Indel distance) / 2."""
    lcs = (len(reference) + len(candidate) - Indel.distance(reference, candidate)) // 2
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


class RougePool:
    """Token lists that new texts are compared with by ROUGE-L F1."""

    def __init__(self, token_lists: Iterable[list[str]] = ()):
        self.pool: list[list[str]] = []
        for tokens in token_lists:
            self.add(tokens)

    def add(self, tokens: list[str]) -> None:
        if tokens:  # rouge_score scores an empty text 0 against anything
            self.pool.append(tokens)

    def reaches(self, tokens: list[str], threshold: float) -> bool:
        """True when some pooled text has ROUGE-L F1 >= `threshold` with `tokens`."""
        if not tokens:
            return False
        # Indel's normalised similarity is 2 LCS / (|a| + |b|) = ROUGE-L F1, up to float rounding
        near = process.extract(
            tokens,
            self.pool,
            scorer=Indel.normalized_similarity,
            score_cutoff=max(0.0, threshold - CUTOFF_SLACK),
            limit=None,
        )
        return any(rouge_l_f1(other, tokens) >= threshold for other, _, _ in near)


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


class EvaluationPrompts:
    """Evaluation prompts, to reject self-instruct prompts that copy or nearly copy one of them."""

    def __init__(self, config: DecontaminateConfig, prompts: Iterable[str]):
        self.config = config
        self.exact = {normalise_prompt(p) for p in prompts}
        self.token_lists = [rouge_tokens(p) for p in self.exact]
        self.rouge = RougePool(self.token_lists if config.method == "rouge_l" else ())
        self.ngram_sets: dict[int, set[tuple[str, ...]]] = {}

    def copied_by(self, text: str) -> bool:
        if normalise_prompt(text) in self.exact:
            return True
        tokens = rouge_tokens(text)
        if self.config.method == "rouge_l":
            return self.rouge.reaches(tokens, self.config.threshold)
        return self.ngram_share(tokens) >= self.config.threshold

    def ngram_share(self, tokens: list[str]) -> float:
        """Share of the text's word n-grams (the whole text when shorter than n) found in evaluation prompts."""
        if not tokens:
            return 0.0
        n = min(self.config.n, len(tokens))
        if n not in self.ngram_sets:
            self.ngram_sets[n] = {gram for other in self.token_lists for gram in ngrams(other, n)}
        grams = ngrams(tokens, n)
        return sum(gram in self.ngram_sets[n] for gram in grams) / len(grams)


def source_prompts(source: str, demo_kind: str, lang: str) -> list[str]:
    """Every first-turn prompt of a source (`demo`: the embedded `demo_kind` file)."""
    return [g.prompt for g in load_groups(str(DEMO_FILES[demo_kind]) if source == "demo" else source, lang)[0]]


def evaluation_sets(config: Config, eft_eval: list[RankedGroup]) -> dict[str, list[str]]:
    """The prompts of every evaluation set the config names, by set name."""
    lang = config.data.lang
    sets = {"eft-eval": [g.prompt for g in eft_eval]}
    sets |= {f"eval.ranked {s}": source_prompts(s, "ranked", lang) for s in config.eval.ranked}
    sets |= {f"eval.prompts {s}": source_prompts(s, "ift", lang) for s in config.eval.prompts if s != "eft-eval"}
    sets |= {
        f"eft.exclude_prompts_from {s}": source_prompts(s, "ranked", lang) for s in config.eft.exclude_prompts_from
    }
    return sets


def test_prompts(run_dir: Path, sources: list[str], lang: str, limit: int) -> list[dict[str, Any]]:
    """Test or validation prompts (`eval.prompts`, `select.prompts`) as `{id, prompt}` rows: `eft-eval`
    (the run's held-out EFT prompts, RUN/eft/eval.jsonl) or IFT-style sources; duplicates once, at most `limit`."""
    prompts: list[str] = []
    for source in sources:
        if source == "eft-eval":
            path = run_dir / "eft" / "eval.jsonl"
            prompts += [g["prompt"] for g in read_jsonl(path)] if path.exists() else []
        else:
            prompts += [e.prompt for e in load_ift([source], lang)[0]]
    unique = list(dict.fromkeys(prompts))[:limit]
    return [{"id": f"t{i:05d}", "prompt": p} for i, p in enumerate(unique)]


@dataclass
class TrainingData:
    """IFT examples and EFT training groups, disjoint from each other and from every evaluation set."""

    ift: list[IFTExample]
    eft_train: list[RankedGroup]
    eft_excluded: set[str]
    """Normalised prompts EFT training must not use: every evaluation prompt and the IFT prompts."""
    evaluation_prompts: list[str]
    stats: dict[str, Any]

    def report(self) -> list[str]:
        """One line per pair of sets that shared prompts, then the totals."""
        lines = [
            f"data: {count} {train} prompts also in {other}: dropped from {train}"
            for train, shared in self.stats["shared_prompts"].items()
            for other, count in shared.items()
            if count
        ]
        ift, eft, sets = self.stats["ift_examples"], self.stats["eft_train_groups"], len(self.stats["evaluation_sets"])
        lines.append(
            f"data: {ift['used']} IFT examples ({ift['dropped']} dropped) and {eft['used']} EFT training groups ({eft['dropped']} dropped), "
            f"disjoint from each other and from {sets} evaluation set{'s' if sets > 1 else ''}"
        )
        return lines


def disjoint_training_data(config: Config, ift: list[IFTExample], ranked: list[RankedGroup]) -> TrainingData:
    """Drop evaluation prompts from IFT and EFT training (or refuse: `data.on_overlap`), cut IFT to
    `data.max_ift`, and drop the IFT prompts from EFT training. Shared prompts are counted on the
    loaded sets, before `data.max_ift` and `eft.max_groups`."""
    eft_split, eft_eval = split_groups(ranked, config.eft.eval_fraction, derive_seed(config.seed, "eft"))
    evaluation = evaluation_sets(config, eft_eval)
    normalised = {name: {normalise_prompt(p) for p in prompts} for name, prompts in evaluation.items()}
    training = {
        "data.ift": [normalise_prompt(e.prompt) for e in ift],
        "eft train": [normalise_prompt(g.prompt) for g in eft_split],
    }
    shared = {
        train: {name: sum(p in found for p in prompts) for name, found in normalised.items()}
        for train, prompts in training.items()
    }
    clashes = [
        f"{train} & {name}: {count}" for train, counts in shared.items() for name, count in counts.items() if count
    ]
    if clashes and config.data.on_overlap == "refuse":
        raise SelfRewardError(
            f"training prompts are also evaluation prompts ({'; '.join(clashes)}); data.on_overlap=remove drops them from training"
        )
    held_out = set().union(*normalised.values())
    kept_ift = [e for e, p in zip(ift, training["data.ift"], strict=True) if p not in held_out][: config.data.max_ift]
    ift_prompts = {normalise_prompt(e.prompt) for e in kept_ift}
    shared["eft train"]["data.ift"] = sum(p in ift_prompts for p in training["eft train"])
    excluded = held_out | ift_prompts
    kept_eft = [g for g, p in zip(eft_split, training["eft train"], strict=True) if p not in excluded]
    stats = {
        "on_overlap": config.data.on_overlap,
        "evaluation_sets": {name: len(prompts) for name, prompts in evaluation.items()},
        "shared_prompts": shared,
        "ift_examples": {
            "loaded": len(ift),
            "dropped": sum(p in held_out for p in training["data.ift"]),
            "used": len(kept_ift),
        },
        "eft_train_groups": {"split": len(eft_split), "dropped": len(eft_split) - len(kept_eft), "used": len(kept_eft)},
    }
    return TrainingData(kept_ift, kept_eft, excluded, [p for prompts in evaluation.values() for p in prompts], stats)
