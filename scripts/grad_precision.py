"""GPT-2 124M (tritonic.models, vocab 256, batch 16x512) on a GPU: each parameter's step-0
gradient error against an fp32 reference (TF32 off) for the torch and tritonic backends in
bf16 autocast, then the median step time of each and a profile of the tritonic step.

    PYTHONPATH=src python scripts/grad_precision.py

Output of 2026-11-23 (H100): benchmarks/results/h100-80gb-hbm3/logs/gpt2_124m_grad_precision_and_profile.log
"""
import time
import torch
from tritonic.models import GPT, GPTConfig

torch.manual_seed(0)
cfg = GPTConfig.gpt2_124m(vocab_size=256)
ref = GPT(cfg, backend="torch").cuda()
tri = GPT(cfg, backend="tritonic").cuda()
tri.load_state_dict(ref.state_dict())
x = torch.randint(0, 256, (16, 512), device="cuda")
y = torch.randint(0, 256, (16, 512), device="cuda")


def grads(model, amp):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        loss = model(x, y)[1]
    loss.backward()
    return loss.item(), {n: p.grad.detach().double().clone() for n, p in model.named_parameters()}


torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
l0, g0 = grads(ref, False)
res = {}
for name, m, amp in (("torch-bf16", ref, True), ("tritonic-bf16", tri, True)):
    l, g = grads(m, amp)
    res[name] = {n: ((g[n] - g0[n]).norm() / g0[n].norm().clamp_min(1e-30)).item() for n in g0}
    print(name, "loss", l, "ref", l0)
names = list(g0)
rows = sorted(names, key=lambda n: -res["tritonic-bf16"][n] / max(res["torch-bf16"][n], 1e-12))
print("%-40s %12s %12s" % ("param", "torch-bf16", "trit-bf16"), flush=True)
for n in rows[:30]:
    print("%-40s %12.3e %12.3e" % (n, res["torch-bf16"][n], res["tritonic-bf16"][n]))
for n in ("wte.weight", "blocks.0.qkv.weight", "blocks.11.fc.weight", "norm.weight"):
    print("%-40s %12.3e %12.3e" % (n, res["torch-bf16"][n], res["tritonic-bf16"][n]), flush=True)

# step times (after warm-up) and a profile of the tritonic step
opt = {m: torch.optim.AdamW(m.parameters(), lr=1e-4) for m in (ref, tri)}
for name, m in (("torch", ref), ("tritonic", tri)):
    for i in range(10):
        if i == 2:
            torch.cuda.synchronize(); t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(x, y)[1]
        loss.backward(); opt[m].step(); opt[m].zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    print(name, "step ms %.2f" % ((time.perf_counter() - t) / 8 * 1e3))
from torch.profiler import profile, ProfilerActivity
for name, m in (("tritonic", tri),):
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = m(x, y)[1]
            loss.backward(); opt[m].step(); opt[m].zero_grad(set_to_none=True)
        torch.cuda.synchronize()
    print(name)
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=22, max_name_column_width=60))
