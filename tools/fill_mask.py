"""`python tools/fill_mask.py --help`: the command lives in paddle_finetune.commands.fill_mask (also installed as
the console script `paddle-finetune-fill-mask`)."""
import sys

from paddle_finetune.commands.fill_mask import main

if __name__ == "__main__":
    sys.exit(main())
