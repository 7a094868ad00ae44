"""Evaluation and metrics: a split scored on every rank and gathered (sharding), the rules that pick the
model a run keeps and stop it early (selection), and the metrics themselves: ROUGE in the published conventions
(rouge: the styles; rouge_chars, rouge_words, rouge_cjk_tokens: one convention each; lcs), accuracy and macro-F1
(classification), loss and perplexity (perplexity).

Imports: the standard library; of the project `runtime.distributed` and `reporting`; paddle inside functions.
"""
