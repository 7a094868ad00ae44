# LCSTS (Chinese short-text summarization) with a pretrained Chinese BART, on a GPU with AMP.
#   python train.py --config configs/lcsts_new.py
# fnlp/bart-base-chinese is a Hugging Face checkpoint (BertTokenizer vocab): download it once, e.g.
#   huggingface-cli download fnlp/bart-base-chinese --local-dir models/bart-base-chinese
# train.py converts it to Paddle on first use (cached in models/bart-base-chinese-paddle).
# lcsts_new downloads through paddlenlp when online; offline, pass train_file/dev_file with
# local copies in its JSON-lines format ({"id", "content", "summary"}).
pretrained_model = "models/bart-base-chinese"
dataset_name = "lcsts_new"
train_file = ""
dev_file = ""
output_dir = "output/lcsts_new"
device = "gpu"
use_amp = True
amp_dtype = "float16"
scale_loss = 2.0**15
max_source_length = 128  # LCSTS texts are about 100 characters
max_target_length = 32
min_target_length = 0
train_batch_size = 64
eval_batch_size = 128
learning_rate = 5e-5
warmup_proportion = 0.02
weight_decay = 0.01
num_train_epochs = 3
max_eval_samples = 2000
logging_steps = 100
save_steps = 5000
save_total_limit = 3
num_beams = 4
