"""The tools' command lines, installed as console scripts (pyproject.toml) and run by the thin scripts in
tools/: prediction (predict_summarization, predict_classification, fill_mask, generate_text; each also runs a
model tools/export_inference.py exported, with --inference_model), conversion (convert_hf_to_paddle), export
(export_hf: to Hugging Face format; export_inference: static graphs for Paddle Inference), and what the
prediction commands share (output: --output checks, atomic writes, the metrics file next to the predictions).

Each command's main(argv) returns its exit status: 0, or 2 (the exporters: 1 or 2) with one `error:` line on stderr.

Imports: the standard library; of the project `errors`, `configuration`, `data`, `models`, `tasks`,
`conversion`, `inference`, `evaluation` and `reporting`; paddle and paddlenlp inside the functions.
"""
