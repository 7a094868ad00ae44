"""Where the project's own folders are: the built-in sample data (datasets/) and the presets (configs/).

The package sits in the project (an editable install, or the source tree on sys.path), so they are found
relative to it, never relative to the directory a user runs from.

Imports: the standard library only.
"""
import os

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS_DIR = os.path.join(PROJECT_ROOT, "datasets")
CONFIGS_DIR = os.path.join(PROJECT_ROOT, "configs")
