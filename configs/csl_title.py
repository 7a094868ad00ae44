# CSL title generation: paper abstract -> title, from headerless TSV (prompt<TAB>abstract<TAB>title).
#   python train.py --config configs/csl_title.py   (the same settings: configs/csl_title.yaml)
# Points at the CSL sample beside the project; for the full CSL data set train_file/dev_file.
# Abstracts average 209 characters (95% under 412), titles 19 (max 50).
train_file = "../shared/data/csl/ts_dev.tsv"
dev_file = ""
dev_size = 100  # no separate dev file here: hold out 100 shuffled rows
text_column = 1
summary_column = 2
output_dir = "output/csl_title"
max_source_length = 320
max_target_length = 48
model_config = dict(
    d_model=256,
    encoder_layers=3,
    decoder_layers=3,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=1024,
    decoder_ffn_dim=1024,
    max_position_embeddings=512,
    dropout=0.1,
    attention_dropout=0.0,
    activation_dropout=0.0,
)
train_batch_size = 32
learning_rate = 5e-4
num_train_epochs = 20
save_steps = 200
logging_steps = 20
num_beams = 1
