"""`python tools/export_inference.py --help`: the command lives in paddle_finetune.commands.export_inference (also
installed as the console script `paddle-finetune-export-inference`)."""
import sys

from paddle_finetune.commands.export_inference import main

if __name__ == "__main__":
    sys.exit(main())
