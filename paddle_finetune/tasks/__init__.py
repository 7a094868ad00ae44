"""What each trainer adds to the engine, and what the tools share with it: how rows become features, how
features become batches, the loss, generation or prediction, and scoring.

    summarization   BART: columns, tokenization, teacher-forced loss, generation, ROUGE and predictions files
    classification  BERT/ERNIE/RoBERTa: labels, tokenization, loss, probabilities, reports
    masked_lm       BERT masking (whole-word with jieba), loss, fill-mask
    causal_lm       GPT blocks, next-token loss, text generation

The trainers at the project root wire these into a TrainingTask; the prediction tools call the same
functions, so a prediction equals what training's evaluation wrote.

Imports: the standard library and numpy; paddle, paddlenlp and jieba inside the functions; of the project
`errors`, `data`, `evaluation`, `models`, `reporting` and `speedups`.
"""
