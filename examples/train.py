"""Train a GPT (tritonic.models) or a Hugging Face causal LM with tritonic's kernels.

    python examples/train.py --model gpt2-tiny --steps 200                       # one process
    python examples/train.py --model llama-tiny --data input.txt --dtype bf16 --plot loss.png
    python examples/train.py --model gpt2-124m --backend torch                  # the PyTorch twin
    python examples/train.py --model hf:config.json                             # transformers + optimize(training=True)
    torchrun --nproc_per_node 2 examples/train.py --dist fsdp --model gpt2-124m # FSDP2 over 2 GPUs (ddp also)

Data: ``--data FILE`` (bytes of a text file, vocabulary 256) or a synthetic stream whose next
token is a fixed function of the last two (learnable, so the loss falls). The global batch
(``--batch`` sequences) is split across processes, so every process count sees the same
tokens at a step and reports the same loss. A progress line shows loss and tokens/s;
``--ckpt DIR`` saves model, optimizer and step every ``--ckpt-every`` steps and ``--resume``
continues exactly where it stopped; ``--losses FILE`` writes the losses as JSON and ``--plot
FILE`` draws the loss curve (matplotlib). ``--cuda-graph`` (one GPU, bf16/fp32) captures
the whole step (forward, backward, clipping, AdamW) in one CUDA graph after a few warm-up
steps at learning rate 0, so the host's per-op cost disappears; the losses are the same as
without it. The JSON also holds each step's wall time; the final line gives the median.
With ``--dist fsdp`` each block is one FSDP2 unit (``--fsdp-unit N``: N blocks per unit),
resharded after forward except the last (``--fsdp-keep-gathered``: none), and ``--fsdp-bf16``
gathers parameters in bf16. AdamW is PyTorch's fused one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

try:
    import tritonic
except ImportError:  # run from a checkout without installing: use ./src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import tritonic

import torch
import torch.distributed as dist

from tritonic.models import GPT, GPTConfig

PRESETS = {
    "gpt2-tiny": lambda v: GPTConfig(vocab_size=v, n_layer=2, n_head=2, d_model=32, max_seq=64),
    "llama-tiny": lambda v: GPTConfig.llama(vocab_size=v, n_layer=2, n_head=4, n_kv_head=2, d_model=32, max_seq=64),
    "gpt2-124m": lambda v: GPTConfig.gpt2_124m(vocab_size=v),
    "llama-124m": lambda v: GPTConfig.llama(vocab_size=v, n_layer=12, n_head=12, n_kv_head=4, d_model=768,
                                            max_seq=1024),
}


# ----------------------------------------------------------------------------- data


class Batches:
    """Deterministic batches: ``get(step)`` is the same on every run and process count; each
    rank takes its contiguous share of the global batch."""

    def __init__(self, data: str | None, vocab: int, batch: int, seq: int, seed: int, rank: int, world: int):
        if batch % world:
            raise SystemExit(f"--batch {batch} must divide by the number of processes ({world})")
        self.tokens = None
        if data:
            raw = Path(data).read_bytes()
            if len(raw) < seq + 2:
                raise SystemExit(f"--data {data}: {len(raw)} bytes, need at least {seq + 2}")
            self.tokens = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
        self.vocab, self.batch, self.seq, self.seed = vocab, batch, seq, seed
        self.share = slice(rank * batch // world, (rank + 1) * batch // world)
        # the synthetic stream is linear mod V: x[t] = A[t] a + B[t] b + C[t] (mod V) from the
        # row's first two tokens (a, b); the coefficients follow the stream's own recurrence
        coef = [(1, 0, 0), (0, 1, 0)]
        for _ in range(2, seq + 1):
            (a1, b1, c1), (a2, b2, c2) = coef[-2], coef[-1]
            coef.append(((3 * a2 + a1) % vocab, (3 * b2 + b1) % vocab, (3 * c2 + c1 + 1) % vocab))
        self.coef = torch.tensor(coef, dtype=torch.long).t()  # (3, seq + 1)

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        if self.tokens is not None:
            start = torch.randint(0, len(self.tokens) - self.seq - 1, (self.batch,), generator=gen)[self.share]
            rows = torch.stack([self.tokens[s:s + self.seq + 1] for s in start.tolist()])
        else:  # x[t+1] = (3 x[t] + x[t-1] + 1) mod V from two random tokens
            first = torch.randint(0, self.vocab, (self.batch, 2), generator=gen)[self.share]
            a, b = first[:, :1], first[:, 1:]
            rows = (a * self.coef[0] + b * self.coef[1] + self.coef[2]) % self.vocab
        return rows[:, :-1], rows[:, 1:]


# ----------------------------------------------------------------------------- model


def build_model(args, vocab: int, device):
    if args.model.startswith("hf:"):
        from transformers import AutoConfig, AutoModelForCausalLM

        import tritonic as T

        cfg = AutoConfig.from_pretrained(args.model[3:])
        cfg.vocab_size = vocab
        torch.manual_seed(args.seed)
        model = AutoModelForCausalLM.from_config(cfg).to(device)
        if args.backend == "tritonic":
            T.optimize(model, training=True)
            if rank0():
                print(model.tritonic_report, file=sys.stderr)
        return model, "hf"
    if args.model not in PRESETS:
        raise SystemExit(f"--model: one of {', '.join(PRESETS)} or hf:CONFIG, got {args.model!r}")
    config = PRESETS[args.model](vocab)
    model = GPT(config, backend=args.backend)
    model.reset_parameters(seed=args.seed)  # the same start for both backends and every process count
    return model.to(device), "gpt"


def loss_of(model, kind, x, y):
    if kind == "hf":  # transformers shifts the labels itself: give it the whole row
        ids = torch.cat([x, y[:, -1:]], dim=1)
        return model(input_ids=ids, labels=ids, use_cache=False).loss
    return model(x, y)[1]


# ----------------------------------------------------------------------------- distributed


def rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def setup_dist(args):
    if args.dist == "none":
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    from datetime import timedelta

    backend = "nccl" if torch.cuda.is_available() and not args.cpu else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=5))  # a lost peer fails the run, not hangs it
    rank, world = dist.get_rank(), dist.get_world_size()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
        return rank, world, torch.device("cuda")
    return rank, world, torch.device("cpu")


def wrap(model, args, kind):
    if args.dist == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)
    if args.dist == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # --fsdp-bf16: gather the parameters in bfloat16 (half the traffic; autocast would cast
        # them for its matmuls anyway), reduce the gradients in float32
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if args.fsdp_bf16 else \
            MixedPrecisionPolicy()
        blocks = list(model.blocks) if kind == "gpt" else [m for m in model.modules()
                                                           if type(m).__name__.endswith("DecoderLayer")]
        # one FSDP unit per --fsdp-unit blocks (each unit's hooks cost host time; fewer units
        # overlap less communication); the last unit's backward needs its parameters at once,
        # so it (or, with --fsdp-keep-gathered, every unit) is not resharded after forward
        per = max(1, args.fsdp_unit)
        units = [blocks[i:i + per] for i in range(0, len(blocks), per)]
        for i, unit in enumerate(units):
            fully_shard(unit if per > 1 else unit[0], mp_policy=mp,
                        reshard_after_forward=not args.fsdp_keep_gathered and i < len(units) - 1)
        fully_shard(model, mp_policy=mp)
    return model


# ----------------------------------------------------------------------------- checkpoints


def save(ckpt: Path, model, opt, step: int, losses: list, args):
    if args.dist == "fsdp":
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        msd, osd = get_state_dict(model, opt)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(ckpt / "dcp"))
    elif rank0():
        inner = model.module if hasattr(model, "module") else model
        torch.save({"model": inner.state_dict(), "optim": opt.state_dict()}, ckpt / "state.pt")
    if rank0():
        (ckpt / "progress.json").write_text(json.dumps({"step": step, "losses": losses}))
    if dist.is_initialized():
        dist.barrier()


def load(ckpt: Path, model, opt, args) -> tuple[int, list]:
    meta = json.loads((ckpt / "progress.json").read_text())
    if args.dist == "fsdp":
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        msd, osd = get_state_dict(model, opt)
        state = {"model": msd, "optim": osd}
        dcp.load(state, checkpoint_id=str(ckpt / "dcp"))
        set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    else:
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
        inner = model.module if hasattr(model, "module") else model
        inner.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
    return meta["step"], meta["losses"]


# ----------------------------------------------------------------------------- main


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gpt2-tiny", help=f"{', '.join(PRESETS)} or hf:CONFIG(.json or folder)")
    p.add_argument("--backend", choices=("tritonic", "torch"), default="tritonic")
    p.add_argument("--data", help="a text file (byte tokens); default: a synthetic stream")
    p.add_argument("--vocab", type=int, default=None, help="vocabulary of the synthetic stream (default 256)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=8, help="global batch, in sequences")
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--fsdp-bf16", action="store_true",
                   help="with --dist fsdp: gather parameters in bf16, reduce gradients in fp32")
    p.add_argument("--fsdp-unit", type=int, default=1, metavar="N", help="with --dist fsdp: blocks per FSDP unit")
    p.add_argument("--fsdp-keep-gathered", action="store_true",
                   help="with --dist fsdp: no unit reshards its parameters after forward (more memory, less traffic)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast dtype")
    p.add_argument("--dist", choices=("none", "ddp", "fsdp"), default="none", help="under torchrun")
    p.add_argument("--ckpt", help="checkpoint folder")
    p.add_argument("--ckpt-every", type=int, default=50)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stop-after", type=int, help="leave after this many steps in this run (then --resume)")
    p.add_argument("--losses", help="write the losses as JSON here")
    p.add_argument("--plot", help="draw the loss curve into this PNG")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu", action="store_true", help="run on the CPU (Triton's interpreter for tritonic)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="capture the whole training step in one CUDA graph (one GPU; bf16 or fp32)")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    rank, world, device = setup_dist(args)
    vocab = 256 if args.data or args.vocab is None else args.vocab
    data = Batches(args.data, vocab, args.batch, args.seq, args.seed, rank, world)
    model, kind = build_model(args, vocab, device)
    model = wrap(model, args, kind)
    graphed = args.cuda_graph
    if graphed and (device.type != "cuda" or world > 1 or args.dtype == "fp16"):
        raise SystemExit("--cuda-graph: one CUDA GPU, --dist none, --dtype bf16 or fp32 (fp16's loss scaler syncs)")
    # capturable AdamW with a device learning rate: the schedule writes into it between replays
    # fused AdamW: one kernel, and under FSDP2 one DTensor dispatch instead of foreach's many
    # (host time of the step on a 12-block model: 2.7 ms instead of 13.7, scripts/fsdp_host.py)
    opt = torch.optim.AdamW(model.parameters(), lr=torch.tensor(args.lr, device=device) if graphed else args.lr,
                            weight_decay=0.1, betas=(0.9, 0.95), capturable=graphed, fused=True)
    sched = lambda s: min(1.0, (s + 1) / max(1, args.warmup)) * 0.5 * (1 + math.cos(math.pi * s / args.steps))  # noqa
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    ckpt = Path(args.ckpt) if args.ckpt else None
    start, losses = 0, []
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
        if args.resume and (ckpt / "progress.json").exists():
            start, losses = load(ckpt, model, opt, args)
            if rank0() and not args.quiet:
                print(f"resumed at step {start}", file=sys.stderr)
    tokens_per_step = args.batch * args.seq
    t0, last = time.perf_counter(), start
    end = args.steps if args.stop_after is None else min(args.steps, start + args.stop_after)
    def train_step(x, y):
        # autocast's cast cache must be off while capturing a graph (the casts are replayed)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None, cache_enabled=not graphed):
            loss = loss_of(model, kind, x, y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        return loss

    step_fn = None
    if graphed and start < end:
        try:  # warm-up at learning rate 0 (nothing moves), then the whole step in one graph
            step_fn = tritonic.capture_train_step(train_step, opt, tuple(t.to(device) for t in data.get(start)))
        except RuntimeError as e:
            raise SystemExit(f"--cuda-graph: {e}") from e
    step_times = []
    pin = device.type == "cuda"

    def fetch(step):  # the batch on the host, pinned so that its copy does not wait for the GPU
        return [t.pin_memory() if pin else t for t in data.get(step)] if step < end else None

    # The loss of a step is read (a sync) only once the next step is queued, so the host
    # prepares step n + 1 while the GPU runs step n; a step's time is then the time between
    # two consecutive reads, which in steady state is the GPU's (or the host's) time per step.
    mark = [time.perf_counter()]

    def record(step, value):  # waits for that step
        losses.append(value.item())
        now = time.perf_counter()
        step_times.append(now - mark[0])
        mark[0] = now
        if rank0() and not args.quiet:
            rate = tokens_per_step * (step + 1 - last) / max(now - t0, 1e-9)
            print(f"\rstep {step + 1}/{args.steps}  loss {losses[-1]:.4f}  {rate:,.0f} tokens/s", end="",
                  file=sys.stderr, flush=True)

    batch, pending = fetch(start), None
    for step in range(start, end):
        for group in opt.param_groups:
            if graphed:
                group["lr"].fill_(args.lr * sched(step))
            else:
                group["lr"] = args.lr * sched(step)
        x, y = (t.to(device, non_blocking=pin) for t in batch)
        if step_fn is not None:
            loss = step_fn(x, y)
        else:
            loss = train_step(x, y)
            opt.zero_grad(set_to_none=True)
        value = loss.detach().float()
        if dist.is_initialized():
            dist.all_reduce(value)
            value /= world
        batch = fetch(step + 1)  # made on the host while the GPU runs this step
        if pending is not None:
            record(*pending)
        pending = (step, value)
        if ckpt is not None and (step + 1) % args.ckpt_every == 0:
            record(*pending)
            pending = None
            save(ckpt, model, opt, step + 1, losses, args)
    if pending is not None:
        record(*pending)
    if rank0():
        if not args.quiet:
            print(file=sys.stderr)
            steady = sorted(step_times[len(step_times) // 10:])  # past the first tenth (tuning, warm-up)
            if steady:
                ms = steady[len(steady) // 2] * 1e3
                print(f"median step {ms:.1f} ms = {tokens_per_step / ms * 1e3:,.0f} tokens/s "
                      f"(after the first {len(step_times) // 10} steps)", file=sys.stderr)
        if args.losses:
            Path(args.losses).write_text(json.dumps({"args": vars(args), "losses": losses,
                                                     "step_seconds": step_times}))
        if args.plot:
            plot(losses, args.plot, f"{args.model} ({args.backend}, {args.dtype}, {world} process(es))")
    if dist.is_initialized():
        dist.barrier()  # every rank is done with its collectives before the group goes (gloo can hang otherwise)
        dist.destroy_process_group()
    return 0


def plot(losses, path, title, others: dict | None = None) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"no matplotlib: {path} not drawn (pip install 'tritonic[bench]')", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(losses) + 1), losses, label=title)
    for name, other in (others or {}).items():
        ax.plot(range(1, len(other) + 1), other, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
