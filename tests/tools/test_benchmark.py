"""Smoke run of tools/benchmark.py: the four setups run end to end in alternating rounds, the JSON has every figure
(the phase breakdown and the CPU description included), and ours, driven through the real training loop, processed
the same real tokens as HF on the same batches.

Timings live in the benchmark itself (see BENCHMARKS.md), not here: this only checks it works.
"""
import json
import subprocess
import sys

from paddle_finetune.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT


def test_benchmark_help():
    out = subprocess.run([sys.executable, "tools/benchmark.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for option in ("--smoke", "--sizes", "--steps", "--repeats", "--output", "--device", "--amp", "--recompute", "--ours_env"):
        assert option in out.stdout


def test_benchmark_smoke(tmp_path):
    path = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "tools/benchmark.py", "--smoke", "--output", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ROUGE" in proc.stdout and "train_tokens_per_s_ours_over_hf" in proc.stdout
    assert "CPU: " in proc.stdout and "family" in proc.stdout and "phases, ms per training step" in proc.stdout
    results = json.loads(path.read_text(encoding="utf-8"))
    tiny = results["sizes"]["tiny"]
    assert set(tiny["setups"]) == {"ours", "pad_to_max", "hf", "hf_random"}
    for setup, r in tiny["setups"].items():
        assert r["train_tokens_per_s"]["median"] > 0 and r["train_tokens_per_s_first_pass"] > 0 and r["peak_rss_mb"] > 0, setup
        assert all(loss == loss for loss in r["first_losses"])  # no NaN
        assert set(r["phases_s_per_step"]) == {"data", "forward", "backward", "optimizer", "loop_other"}, setup
        assert r["phases_s_per_step"]["forward"] > 0 and r["phases_s_per_step"]["backward"] > 0, setup
    for setup in ("ours", "hf"):
        for key in ("gen_greedy_tokens_per_s", "gen_beam4_tokens_per_s"):
            assert tiny["setups"][setup][key]["median"] > 0
    # the same model on both frameworks: parameter counts agree (paddlenlp and HF BART)
    assert tiny["setups"]["ours"]["params"] == tiny["setups"]["hf"]["params"]
    # ours runs the real loop (run_training) and counts real tokens in its own train_log.jsonl; on the same
    # batches that is exactly what the HF loop counts from its collator's masks
    assert tiny["setups"]["ours"]["engine"] == "train_utils.run_training"
    assert tiny["setups"]["ours"]["train_tokens_first_pass"] == tiny["setups"]["hf"]["train_tokens_first_pass"] > 0
    assert tiny["setups"]["pad_to_max"]["train_tokens_first_pass"] == tiny["setups"]["hf_random"]["train_tokens_first_pass"] > 0
    for key in ("train_tokens_per_s_ours_over_hf", "train_tokens_per_s_ours_over_pad_to_max", "train_tokens_per_s_first_pass_ours_over_hf",
                "gen_greedy_tokens_per_s_ours_over_hf",
                "gen_beam4_tokens_per_s_ours_over_hf", "peak_rss_ours_over_hf"):
        assert tiny["ratios"][key] > 0
    assert results["hardware"]["vendor"] and results["hardware"]["Model name"]
    assert 0 < results["rouge_1000_pairs_s"]["median"] < 5
    assert len(results["rouge_1000_pairs_s"]["runs"]) >= 1
