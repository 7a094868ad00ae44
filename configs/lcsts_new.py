# The LCSTS recipe in Python: the same settings as configs/lcsts_new.yaml, which documents what it aims at
# (fnlp/bart-base-chinese, ROUGE-L 38.78 in rouge_style "chars"), what it needs and its estimated cost.
#   python train.py --config configs/lcsts_new.py
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
rouge_style = "chars"
