"""Evaluation and metrics: a split scored on every rank and gathered (sharding), the rules that pick the
model a run keeps and stop it early (selection), and the metrics themselves: ROUGE for Chinese, English and
mixed text (rouge), accuracy and macro-F1 (classification), loss and perplexity (perplexity).

Imports: the standard library; of the project `runtime.distributed` and `reporting`; paddle inside functions.
"""
