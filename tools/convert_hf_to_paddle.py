"""`python tools/convert_hf_to_paddle.py --help`: the command lives in paddle_finetune.commands.convert_hf_to_paddle (also installed as
the console script `paddle-finetune-convert-hf-to-paddle`)."""
import sys

from paddle_finetune.commands.convert_hf_to_paddle import main

if __name__ == "__main__":
    sys.exit(main())
