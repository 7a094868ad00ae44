"""`python tools/export_hf.py --help`: the command lives in paddle_finetune.commands.export_hf (also installed as the
console script `paddle-finetune-export-hf`)."""
import sys

from paddle_finetune.commands.export_hf import main

if __name__ == "__main__":
    sys.exit(main())
