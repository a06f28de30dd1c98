"""Evaluation: reward-model metrics, head-to-head, AlpacaEval-style and MT-Bench answers, report."""
