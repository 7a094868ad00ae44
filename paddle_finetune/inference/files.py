"""The exported directory's format: inference_config.json (what was exported, from where, with which paddle;
each graph's files, inputs and outputs), and the checks a reader makes before it builds a predictor.

An exported directory holds, per graph NAME, the program (NAME.json: paddle 3's PIR format; NAME.pdmodel:
paddle 2's) and NAME.pdiparams, then the paddlenlp config.json (and generation_config.json), the tokenizer,
label_map.json for a classifier, the run's train_config.json when the source had one, and inference_config.json,
written last.

Imports: the standard library; of the project `errors`.
"""
import json
import os

from paddle_finetune.errors import CheckpointError

INFERENCE_CONFIG = "inference_config.json"
FORMAT_VERSION = 1
PROGRAM_SUFFIXES = (".json", ".pdmodel")  # paddle 3 (PIR), paddle 2


def program_file(spec, name):
    """The program file of a graph; refuses a PIR program on a paddle that cannot read one."""
    import paddle

    program = spec["program"]
    if program.endswith(".json") and int(paddle.__version__.split(".")[0]) < 3 and paddle.__version__ != "0.0.0":
        raise CheckpointError(f"graph {name!r} ({program}) is in paddle 3's PIR format, which paddle "
                              f"{paddle.__version__} cannot read; export it again with this paddle")
    return program


def read_inference_config(directory):
    path = os.path.join(directory, INFERENCE_CONFIG)
    if not os.path.isdir(directory):
        raise CheckpointError(f"--inference_model {directory}: not a directory")
    if not os.path.isfile(path):
        raise CheckpointError(f"{directory}: no {INFERENCE_CONFIG}; it is not a directory tools/export_inference.py "
                              "wrote (or the export did not finish)")
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    if info.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {info.get('format_version')!r}, this version reads {FORMAT_VERSION}")
    for name, spec in info.get("graphs", {}).items():
        for key in ("program", "params"):
            if not os.path.isfile(os.path.join(directory, spec[key])):
                raise CheckpointError(f"{directory}: graph {name!r} lacks its {key} file {spec[key]}")
    return info


def write_inference_config(directory, info):
    with open(os.path.join(directory, INFERENCE_CONFIG), "w", encoding="utf-8") as f:
        json.dump({"format_version": FORMAT_VERSION, **info}, f, ensure_ascii=False, indent=2)
        f.write("\n")


def saved_program(directory, name):
    """The program file paddle.jit.save wrote for NAME (its format depends on the paddle version)."""
    for suffix in PROGRAM_SUFFIXES:
        if os.path.isfile(os.path.join(directory, name + suffix)):
            return name + suffix
    raise CheckpointError(f"paddle.jit.save wrote no program for graph {name!r} in {directory} "
                          f"(looked for {', '.join(name + s for s in PROGRAM_SUFFIXES)})")
