"""Drives reporting the way the training loop does, in a process of its own (see tests/reporting/test_reporting_loop.py).

python tests/reporting_loop_entry.py OUT_DIR [--max_steps N] [--resume_step S --run_id ID] [--crash_at K] [--offset X]

Quiet the libraries, log before output_dir may be written, attach run.log, open wandb + VisualDL, train
(a progress bar, scalars every step, an eval with its own bar, a table and a paddlenlp save_pretrained
into a .tmp-checkpoint dir renamed into place every 2 steps), then results, summary and the picture.
--crash_at raises mid-run (after the checkpoint before it), as a failing run would; --offset shifts the
logged values so a test can tell a resumed run's records from the crashed one's.
"""
import argparse
import os
import shutil
import warnings
from paddle_finetune.checkpoints.output_dir import open_output_dir
from paddle_finetune.reporting.console import describe_config, log, quiet_libraries, warn_once
from paddle_finetune.reporting.curves import plot_training_curves
from paddle_finetune.reporting.dashboards import open_reporting
from paddle_finetune.reporting.files import append_jsonl, summary_lines, truncate_jsonl, write_json_atomic, write_results
from paddle_finetune.reporting.progress import progress_bar

from paddle_finetune.runtime.state import note_write
from paddle_finetune.training.session import Run


def as_dict(summary):
    """A wandb summary (nested SummarySubDicts for tables) as plain JSON."""
    return {k: as_dict(summary[k]) if hasattr(summary[k], "keys") else summary[k] for k in summary.keys()}  # noqa: SIM118 - iterating a wandb summary does not give its keys


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--max_steps", type=int, default=10)
    parser.add_argument("--resume_step", type=int, default=None)
    parser.add_argument("--run_id", default=None)
    parser.add_argument("--crash_at", type=int, default=0)
    parser.add_argument("--offset", type=float, default=0.0)
    args = parser.parse_args()
    quiet_libraries()  # first, before paddle is imported
    config = {"output_dir": args.out, "learning_rate": 1e-3, "max_steps": args.max_steps, "report_to": "wandb,visualdl",
              "wandb_project": "reporting-test", "model_config": {"d_model": 16},
              "resume_from_checkpoint": "auto" if args.resume_step is not None else None}
    with Run(config):  # owns run.log, as a trainer's run does: a crash's traceback lands there too
        train(args, config)


def train(args, config):
    out = args.out
    describe_config(config)
    warn_once("use_amp=True ignored: AMP needs a GPU; training in fp32")
    warnings.warn("a library warning before the output dir exists")

    import paddle  # noqa: F401 - its import-time warnings must not reach the console
    from paddlenlp.transformers import BartConfig, BartForConditionalGeneration

    model = BartForConditionalGeneration(BartConfig(
        vocab_size=40, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, max_position_embeddings=32))

    open_output_dir(config)  # the engine's: every check passed; records what the run writes, attaches run.log
    train_log, metrics_log = os.path.join(out, "train_log.jsonl"), os.path.join(out, "metrics.jsonl")
    start = args.resume_step or 0
    if args.resume_step is not None:
        truncate_jsonl(train_log, start)
        truncate_jsonl(metrics_log, start)
        log(f"resumed from {out}/checkpoint-{start}: step {start}")
    rep = open_reporting(["wandb", "visualdl"], config, out, run_id=args.run_id, resume_step=args.resume_step)
    note_write(os.path.join(out, "wandb_run_id.txt"))
    with open(os.path.join(out, "wandb_run_id.txt"), "w") as f:  # the engine keeps it in the checkpoint
        f.write(rep.wandb_run_id or "")

    bar = progress_bar(args.max_steps, "train", initial=start)
    best = None
    for step in range(start + 1, args.max_steps + 1):
        loss, lr = 5.0 / step + args.offset, 1e-3 * (1 - step / (args.max_steps + 1))
        bar.update(1)
        append_jsonl(train_log, {"step": step, "epoch": step / 5, "loss": loss, "lr": lr, "tokens_per_s": 1000.0})
        rep.scalars({"train/loss": loss, "train/lr": lr, "train/tokens_per_s": 1000.0}, step)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
        log(f"step {step}/{args.max_steps} loss {loss:.4f} lr {lr:.3e}")
        if step % 2 == 0:
            generate = progress_bar(8, "eval")
            for _ in range(8):
                generate.update(1)
            generate.close()
            metrics = {"rouge1": 1.5 * step + args.offset, "rougeL": step + args.offset}
            append_jsonl(metrics_log, {"step": step, **metrics})
            rep.scalars({f"eval/{k}": v for k, v in metrics.items()}, step)
            rep.table("eval/samples", ["source", "prediction"], [["一篇新闻", "摘要"]], step)
            log(f"eval at step {step}: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
            tmp, final = os.path.join(out, f".tmp-checkpoint-{step}-{os.getpid()}"), os.path.join(out, f"checkpoint-{step}")
            note_write(final, "dir")  # as checkpoints.storage does: recorded before it exists
            model.save_pretrained(tmp)  # paddlenlp logs five "... saved in <tmp>" lines here
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            best = step
            write_json_atomic(os.path.join(out, "trainer_state.json"),
                                        {"global_step": step, "best_checkpoint": final, "metric_for_best": "rougeL", "best_metric": metrics["rougeL"]})
            rep.flush()
            log(f"saved {final}")
        if step == args.crash_at:
            raise RuntimeError(f"simulated crash at step {step}")
    bar.close()

    results = write_results(out, {
        "train_steps": args.max_steps, "epoch": args.max_steps / 5, "train_runtime": 1.5, "train_tokens_per_second": 1000.0,
        "train_loss": loss, "metric_for_best": "rougeL", "best_metric": best + args.offset, "best_step": best,
        "best_checkpoint": os.path.join(out, f"checkpoint-{best}"), "eval_rougeL": best + args.offset, "eval_step": best,
        "test_rougeL": 3.0, "final_model": os.path.join(out, f"checkpoint-{best}"),
    })
    log("\n".join(summary_lines(results)))
    rep.summary({"best_rougeL": results["best_metric"], "test/rougeL": 3.0})
    if rep.wandb_run is not None:  # wandb's run summary (before finish, which detaches it), for the test to read
        write_json_atomic(os.path.join(out, "wandb_summary.json"), as_dict(rep.wandb_run.summary))
    plot_training_curves(out)
    rep.close()


if __name__ == "__main__":
    main()
