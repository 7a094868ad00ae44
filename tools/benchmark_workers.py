"""The worker processes of tools/benchmark.py: one per setup, alive together, each computing only when the driver
hands it the turn, so that ours and Hugging Face are timed in alternating rounds on the same batches (the machine's
other load falls on both alike).

Protocol: the driver writes one JSON command per line to the worker's command pipe; the worker answers each with
one JSON line on its reply pipe, then waits for the next command doing nothing. Commands, in the driver's order:
"train" (run until the end of the next timed segment: the first pass, then each round), "phases", "gen" (one
round of generation; "warm": untimed), "finish".

* ours / pad_to_max: train_utils.run_training itself, twice on the same model (the first run's timed segment is
  the cold first pass, the second run's segments the steady rounds, on the same batches). A step is timed from
  the moment the loop asks for its batch to the moment it asks for the next one: collation, forward, backward,
  optimizer, the loop's logging and bookkeeping. Each run has one untimed step more, so its last timed step ends
  where the next begins; the final checkpoint save comes after.
* hf / hf_random: transformers' BART in a plain torch loop, timed the same way.
* "phases": the rounds' batches once more through an instrumented step (data, forward, backward, optimizer).

Imports: the standard library; paddle, paddlenlp, torch and transformers inside the workers; of the project the
summarization task, the engine and the benchmark's shared helpers (tools/benchmark.py).
"""
import functools
import json
import os
import resource
import statistics
import time


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Channel:
    """The worker's side of the pipes."""

    def __init__(self, spec):
        self.commands = os.fdopen(spec["command_fd"], "r", encoding="utf-8")
        self.replies = os.fdopen(spec["reply_fd"], "w", encoding="utf-8")
        self.pending = None  # a command received inside the training loop, for after it

    def send(self, **data):
        self.replies.write(json.dumps(data) + "\n")
        self.replies.flush()

    def receive(self):
        line = self.commands.readline()
        if not line:
            raise SystemExit("benchmark worker: the driver is gone")
        return json.loads(line)


class SegmentClock:
    """Times steps by their starts, replies at the end of each timed segment and waits for the next command.

    segments: (first, last) 1-based step numbers of one run. step_start(k) is called as step k begins; tokens(n)
    once its batch is known."""

    def __init__(self, channel, segments, label):
        self.channel, self.segments, self.label = channel, segments, label
        self.step, self.start, self.times, self.counts = 0, None, [], []

    def step_start(self):
        now = time.perf_counter()
        if self.start is not None:
            self.times.append(now - self.start)
            self.start = None
        self.step += 1
        for first, last in self.segments:
            if self.step - 1 == last:
                self.channel.send(label=self.label, seconds=self.times[-(last - first + 1):],
                                  tokens=self.counts[-(last - first + 1):])
                self.channel.pending = self.channel.receive()
        if any(first <= self.step <= last for first, last in self.segments):
            self.start = time.perf_counter()

    def tokens(self, n):
        if self.start is not None:
            self.counts.append(int(n))


def segments_of(args, steps, first_pass):
    """A run's timed segments: after the warm-up, one segment of every round's steps (first pass) or one per round."""
    w, r = args.warmup, args.repeats
    if first_pass:
        return [(w + 1, w + r * steps)]
    return [(w + 1 + i * steps, w + (i + 1) * steps) for i in range(r)]


def serve(channel, handlers):
    """After training: answer commands until "finish"."""
    while True:
        command = channel.pending or channel.receive()
        channel.pending = None
        if command["do"] == "finish":
            channel.send(**handlers["finish"]())
            return
        channel.send(**handlers[command["do"]](command))


# ----------------------------------------------------------------------------
# ours / pad_to_max: the real engine
# ----------------------------------------------------------------------------
def worker_paddle(spec, shared, channel, helpers):
    from paddlenlp.transformers import BartConfig, BartForConditionalGeneration

    import train
    from paddle_finetune.checkpoints.output_dir import open_output_dir
    from paddle_finetune.models.loading import count_parameters
    from paddle_finetune.reporting.console import log
    from paddle_finetune.runtime.environment import setup_device
    from paddle_finetune.runtime.rng import set_seed
    from paddle_finetune.speedups import release_free_memory
    from paddle_finetune.tasks.summarization import collate, generate_ids, seq2seq_loss
    from paddle_finetune.training.loop import run_training
    from paddle_finetune.training.task import TrainingTask

    args = helpers.namespace(spec["args"])
    pad_to_max = spec["setup"] == "pad_to_max"
    device = setup_device(args.device, fast_kernels=not args.no_fast_kernels)
    ids, feats, steps = shared["ids"], shared["train_features"], spec["steps"]
    cfg = dict(train.CONFIG, learning_rate=args.learning_rate, max_source_length=args.max_source_length,
               max_target_length=args.max_target_length, num_beams=1, eval_batch_size=args.eval_batch_size,
               train_batch_size=args.batch_size, seed=args.seed, max_steps=args.warmup + args.repeats * steps + 1,
               logging_steps=1, save_steps=10**9, save_total_limit=0, report_to="none", device=args.device,
               use_amp=args.device == "gpu" and args.amp != "none", amp_dtype="bfloat16" if args.amp == "bf16" else "float16",
               pad_to_max_length=pad_to_max, group_by_length=not pad_to_max, fast_kernels=not args.no_fast_kernels,
               recompute=args.recompute)
    set_seed(args.seed)
    model = BartForConditionalGeneration(BartConfig(**helpers.model_config(spec["size"], shared)))
    pad_to = (args.max_source_length, args.max_target_length) if pad_to_max else None
    base_collate = functools.partial(collate, pad_id=ids["pad"], decoder_start_id=ids["decoder_start"], pad_to=pad_to)
    channel.send(event="ready", params=count_parameters(model), device=device)
    channel.pending = channel.receive()
    first_losses = []
    for name, first_pass in (("first_pass", True), ("steady", False)):
        out = os.path.join(os.path.dirname(spec["out"]), f"{spec['size']}-{spec['setup']}-{name}")
        run_cfg = dict(cfg, output_dir=out)
        open_output_dir(run_cfg)
        set_seed(args.seed)
        clock = SegmentClock(channel, segments_of(args, steps, first_pass), name)

        def timed_collate(features, rng=None, clock=clock):
            clock.step_start()
            batch = base_collate(features, rng)
            clock.tokens(batch.num_tokens)
            return batch

        task = TrainingTask(config=run_cfg, model=model, tokenizer=None, train_features=feats,
                            train_lengths=[len(f["input_ids"]) + len(f["labels"]) for f in feats], collate_fn=timed_collate,
                            loss_fn=seq2seq_loss, group_by_length=run_cfg["group_by_length"])
        log(f"benchmark: {name} run of run_training ({run_cfg['max_steps']} steps)")
        run_training(task)
        if first_pass:
            with open(os.path.join(out, "train_log.jsonl"), encoding="utf-8") as f:
                first_losses = [json.loads(line)["loss"] for line in f][:3]

    round_batches = [[feats[i] for i in b] for b in shared["shuffled_batches" if pad_to_max else "grouped_batches"]
                     [args.warmup:args.warmup + steps]]

    def phases(_command):
        import paddle

        from paddle_finetune.data.batching import to_tensors
        from paddle_finetune.training.optimization import build_optimizer

        optimizer, scheduler = build_optimizer(model, run_cfg, len(round_batches) + 1)
        model.train()
        times = []
        for features in round_batches:
            t0 = time.perf_counter()
            tensors = to_tensors(base_collate(features).arrays)
            t1 = time.perf_counter()
            with paddle.amp.auto_cast(enable=run_cfg["use_amp"], dtype=run_cfg["amp_dtype"], level="O1"):
                loss = seq2seq_loss(model, tensors)
            float(loss)
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            optimizer.step()
            optimizer.clear_grad()
            scheduler.step()
            t4 = time.perf_counter()
            times.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
        return phase_summary(times)

    def generation(command):
        model.eval()
        if command.get("warm"):  # where evaluation starts in a run (training.evaluate_only.evaluate)
            release_free_memory()
        min_len = args.max_target_length if args.fixed_length else 0

        def generate_batch(features, num_beams):
            return generate_ids(model, features, dict(cfg, num_beams=num_beams, min_target_length=min_len), ids)

        return generation_round(args, generate_batch, shared["dev_features"], command)

    def finish():
        return {"params": count_parameters(model), "device": device, "first_losses": first_losses, "peak_rss_mb": peak_rss_mb(),
                "engine": "train_utils.run_training"}

    serve(channel, {"phases": phases, "gen": generation, "finish": finish})


# ----------------------------------------------------------------------------
# hf / hf_random: transformers in a plain torch loop
# ----------------------------------------------------------------------------
def worker_hf(spec, shared, channel, helpers):
    import torch
    from transformers import (BartConfig, BartForConditionalGeneration, BertTokenizer, DataCollatorForSeq2Seq,
                              get_linear_schedule_with_warmup)

    args = helpers.namespace(spec["args"])
    device = "cuda" if args.device == "gpu" else "cpu"
    torch.manual_seed(args.seed)
    # paddlenlp's BART has an untied lm_head_weight of its own: untie HF's too, so both are the same model
    config = BartConfig(**helpers.model_config(spec["size"], shared), scale_embedding=False, activation_function="gelu",
                        tie_word_embeddings=False)
    model = BartForConditionalGeneration(config).to(device)
    if args.recompute:
        model.gradient_checkpointing_enable()
    n_params = sum(p.numel() for p in model.parameters())
    tokenizer = BertTokenizer(vocab_file=shared["vocab_file"], do_lower_case=True)
    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, return_tensors="pt")
    steps = spec["steps"]
    total = 2 * (args.warmup + args.repeats * steps + 1)
    no_decay = [n for n, _ in model.named_parameters() if "bias" in n or "norm" in n.lower()]
    groups = [{"params": [p for n, p in model.named_parameters() if n not in no_decay], "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters() if n in no_decay], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, eps=1e-8)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.05 * total), total)  # train.CONFIG warmup_proportion
    amp_dtype = torch.bfloat16 if args.amp == "bf16" else torch.float16
    use_amp = device == "cuda" and args.amp != "none"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and args.amp == "fp16")
    feats = shared["train_features"]
    # hf: our length-grouped batches (as Trainer's group_by_length=True would); hf_random: Seq2SeqTrainer's default order
    batches = shared["shuffled_batches" if spec["setup"] == "hf_random" else "grouped_batches"]
    losses = []

    def collate(index):
        features = [{"input_ids": feats[i]["input_ids"], "labels": feats[i]["labels"]} for i in batches[index]]
        batch = {k: v.to(device) for k, v in collator(features).items()}
        return batch, int(batch["attention_mask"].sum()) + int((batch["labels"] != -100).sum())

    def step(batch):
        with torch.autocast(device_type=device, dtype=amp_dtype, enabled=use_amp):
            loss = model(**batch).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        return float(loss)

    channel.send(event="ready", params=n_params, device=device, torch_threads=torch.get_num_threads())
    channel.pending = channel.receive()
    model.train()
    for name, first_pass in (("first_pass", True), ("steady", False)):  # the same batches as ours, run by run
        clock = SegmentClock(channel, segments_of(args, steps, first_pass), name)
        for index in range(args.warmup + args.repeats * steps + 1):
            clock.step_start()
            batch, tokens = collate(index)
            clock.tokens(tokens)
            losses.append(step(batch))

    def phases(_command):
        model.train()
        times = []
        for index in range(args.warmup, args.warmup + steps):
            t0 = time.perf_counter()
            batch, _ = collate(index)
            t1 = time.perf_counter()
            with torch.autocast(device_type=device, dtype=amp_dtype, enabled=use_amp):
                loss = model(**batch).loss
            float(loss)
            t2 = time.perf_counter()
            scaler.scale(loss).backward()
            t3 = time.perf_counter()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            t4 = time.perf_counter()
            times.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
        return phase_summary(times)

    ids = shared["ids"]

    def generate_batch(features, num_beams):
        order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
        out = [None] * len(features)
        with torch.no_grad():
            for start in range(0, len(order), args.eval_batch_size):
                chunk = order[start:start + args.eval_batch_size]
                batch = tokenizer.pad([{"input_ids": features[i]["input_ids"]} for i in chunk], return_tensors="pt").to(device)
                gen = model.generate(**batch, max_new_tokens=args.max_target_length, num_beams=num_beams, do_sample=False,
                                     decoder_start_token_id=ids["decoder_start"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
                                     min_new_tokens=args.max_target_length if args.fixed_length else 0, use_cache=True)
                for i, row in zip(chunk, gen[:, 1:].cpu().numpy()):  # drop the decoder start token
                    out[i] = row
        return out

    def generation(command):
        model.eval()
        return generation_round(args, generate_batch, shared["dev_features"], command)

    def finish():
        return {"params": n_params, "device": device, "first_losses": losses[:3], "peak_rss_mb": peak_rss_mb(),
                "torch_threads": torch.get_num_threads()}

    serve(channel, {"phases": phases, "gen": generation, "finish": finish})


# ----------------------------------------------------------------------------
# shared by both workers
# ----------------------------------------------------------------------------
def phase_summary(times):
    """Mean seconds per step of each phase over the instrumented steps."""
    names = ("data", "forward", "backward", "optimizer")
    return {"phases": {n: statistics.mean(t[i] for t in times) for i, n in enumerate(names)}, "steps": len(times)}


def generation_round(args, generate_batch, features, command):
    """One generation round (or the warm-up on the longest batch): generated tokens and seconds."""
    beams = command["beams"]
    rows = features[:args.eval_samples if beams == 1 else args.beam_samples]
    if command.get("warm"):
        generate_batch(sorted(rows, key=lambda f: -len(f["input_ids"]))[:args.eval_batch_size], beams)
        return {"warm": True}
    start = time.perf_counter()
    out = generate_batch(rows, beams)
    return {"seconds": time.perf_counter() - start, "tokens": count_generated(out, command["eos"], command["pad"])}


def count_generated(rows, eos, pad):
    """Generated tokens per row: up to and including the first eos, never padding."""
    total = 0
    for row in rows:
        row = [int(t) for t in row]
        total += row.index(eos) + 1 if eos in row else len([t for t in row if t != pad])
    return total
