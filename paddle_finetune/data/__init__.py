"""The data a run reads: local files (readers: JSON, JSON lines, TSV, CSV, TXT, every bad row named by
file:line), rows turned into examples by column (examples), named datasets (named: a local Hugging Face
folder, a Hugging Face name, a paddlenlp name), which splits a run reads and holds out (splits),
vocabularies and decoding (text), and the order training examples are seen in (batching).

This folder is deliberately *not* the top-level ``datasets/``: a top-level ``datasets`` package would
shadow the Hugging Face library paddlenlp imports. ``datasets/`` holds data files only.

Imports: the standard library and numpy; Hugging Face `datasets`, paddle and paddlenlp inside the functions
that need them; of the project `errors` and `paths`.
"""
