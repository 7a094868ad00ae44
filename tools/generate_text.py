"""`python tools/generate_text.py --help`: the command lives in paddle_finetune.commands.generate_text (also installed as
the console script `paddle-finetune-generate-text`)."""
import sys

from paddle_finetune.commands.generate_text import main

if __name__ == "__main__":
    sys.exit(main())
