import os
import sys

# Tests import the project's top-level modules (train_utils, data_utils, ...) and
# tools/ as a package, wherever pytest is started from.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
