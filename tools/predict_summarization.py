"""`python tools/predict_summarization.py --help`: the command lives in paddle_finetune.commands.predict_summarization (also installed as
the console script `paddle-finetune-predict-summarization`)."""
import sys

from paddle_finetune.commands.predict_summarization import main

if __name__ == "__main__":
    sys.exit(main())
