"""Models and tokenizers: weights read from any model directory without unpickling and matched to the model
exactly (weights), and the pretrained model, tokenizer and position limits a run starts from (loading).

Imports: the standard library and numpy; paddle, paddlenlp and safetensors inside the functions; of the
project `errors`, `checkpoints.files`, `conversion` (local Hugging Face directories), `runtime` and
`reporting`.
"""
