"""`python tools/predict_classification.py --help`: the command lives in paddle_finetune.commands.predict_classification (also installed as
the console script `paddle-finetune-predict-classification`)."""
import sys

from paddle_finetune.commands.predict_classification import main

if __name__ == "__main__":
    sys.exit(main())
