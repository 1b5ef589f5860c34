"""Which operation makes training differ between two CPUs (issue #35)? Hashes of single operations
that the kernel check's tiny T5 runs (matrix products as MKL computes them, attention's batched
product, softmax, exp/log, the RMS norm, ReLU, cross-entropy, embedding's backward, one AdamW step)
and of the taggers' (small-row products, sigmoid/tanh, an LSTM packed and unpacked, the CRF),
on fixed seeded inputs, under each kernel setting of ``benchmarks/kernel_settings.py`` and 1 or 2
threads, each in a fresh process (the settings are read when torch loads). Then the tiny T5's own
first forward (loss), first backward (gradients) and first optimizer step.

    python benchmarks/kernel_ops.py --out benchmarks/results/kernel_ops_<cpu>.json \
        [--compare benchmarks/results/kernel_ops_<other cpu>.json]          # ~1 min

Run it on two CPUs and compare: the first row that differs under a setting names the operation
whose kernels that setting leaves to the CPU. (The whole-training hashes are kernel_settings.py's.)
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_settings import SETTINGS, cpu  # noqa: E402

CHILD = r"""
import hashlib, json, os, torch
from transformers import T5Config, T5ForConditionalGeneration
torch.set_num_threads(int(os.environ["KO_THREADS"]))
def h(t):
    t = t if isinstance(t, (list, tuple)) else [t]
    return hashlib.sha256(b"".join(x.detach().contiguous().numpy().tobytes() for x in t)).hexdigest()[:16]
g = torch.Generator().manual_seed(0)
r = lambda *s: torch.randn(*s, generator=g)
a, b, q, k = r(960, 128), r(128, 256), r(64, 60, 32), r(64, 32, 60)
out = {"randn": h([a, b, q, k]),
       "mm": h(a @ b), "mm_at_b": h(a.T @ (a @ b)), "addmm": h(torch.addmm(r(256), a, b)),
       "bmm": h(torch.bmm(q, k)), "softmax": h(torch.softmax(torch.bmm(q, k), -1)),
       "exp": h(torch.exp(a)), "log": h(torch.log(a.abs() + 1e-3)), "rsqrt_mean": h(torch.rsqrt(a.pow(2).mean(-1) + 1e-6)),
       "relu": h(torch.relu(a @ b)), "sum": h([a.sum(), a.sum(0), a.sum(1)])}
logits, target = r(128, 500), torch.randint(0, 500, (128,), generator=g)
x = logits.clone().requires_grad_(); loss = torch.nn.functional.cross_entropy(x, target); loss.backward()
out["cross_entropy"], out["cross_entropy_grad"] = h(loss), h(x.grad)
emb = torch.nn.Embedding(500, 128); torch.nn.init.normal_(emb.weight, generator=g)
emb(torch.randint(0, 500, (16, 60), generator=g)).pow(2).sum().backward(); out["embedding_grad"] = h(emb.weight.grad)
# the taggers (BiLSTM-CRF, M-JAVE): small-row products, gates, an LSTM packed (ATen's own loop, as the
# taggers run it) and unpacked (oneDNN's RNN where enabled, and with oneDNN off), the CRF's likelihood
s_in, w = r(3, 128), r(128, 512)
out["mm_3_rows"], out["mv"] = h(s_in @ w), h(w.T @ r(128))
out["sigmoid"], out["tanh"] = h(torch.sigmoid(a)), h(torch.tanh(a))
lstm = torch.nn.LSTM(128, 128, batch_first=True, bidirectional=True)
with torch.no_grad():
    for prm in lstm.parameters():
        prm.copy_(r(*prm.shape) * 0.1)
xs, lens = r(16, 40, 128), torch.randint(5, 41, (16,), generator=g)
packed = torch.nn.utils.rnn.pack_padded_sequence(xs, lens, batch_first=True, enforce_sorted=False)
y, _ = lstm(packed); y = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=True)[0]
y.pow(2).sum().backward(); out["lstm_packed"], out["lstm_packed_grad"] = h(y), h([q.grad for q in lstm.parameters()])
with torch.no_grad():
    out["lstm_unpacked"] = h(lstm(xs)[0])
    with torch.backends.mkldnn.flags(enabled=False):
        out["lstm_unpacked_no_onednn"] = h(lstm(xs)[0])
from torchcrf import CRF
crf = CRF(9, batch_first=True)
with torch.no_grad():
    for prm in crf.parameters():
        prm.copy_(r(*prm.shape) * 0.1)
em = r(16, 40, 9).requires_grad_(); tags = torch.randint(0, 9, (16, 40), generator=g)
mask = torch.arange(40)[None] < lens[:, None]
ll = crf(em, tags, mask=mask, reduction="mean"); ll.backward(); out["crf_llh"], out["crf_grad"] = h(ll), h(em.grad)
p = torch.nn.Parameter(r(256, 128)); p.grad = r(256, 128); opt = torch.optim.AdamW([p], lr=1e-3)
opt.step(); opt.step(); out["adamw_2_steps"] = h(p)
torch.manual_seed(0)
m = T5ForConditionalGeneration(T5Config(vocab_size=500, d_model=128, d_ff=256, num_layers=2, num_heads=4, d_kv=32,
                                        decoder_start_token_id=0))
out["t5_init"] = h(list(m.parameters()))
g1 = torch.Generator().manual_seed(1)
xi, yi = torch.randint(2, 500, (16, 60), generator=g1), torch.randint(2, 500, (16, 8), generator=g1)
lo = m(input_ids=xi, labels=yi).loss; out["t5_loss"] = h(lo); lo.backward()
out["t5_grads"] = h([p.grad for p in m.parameters()])
torch.optim.AdamW(m.parameters(), lr=1e-3).step(); out["t5_step"] = h(list(m.parameters()))
print(json.dumps(out))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--compare", type=Path, nargs="*", default=[], help="this script's results on other CPUs")
    args = ap.parse_args()
    import torch
    rows = []
    for name, env in SETTINGS.items():
        for threads in (1, 2):
            child = subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, **env, "KO_THREADS": str(threads)},
                                   capture_output=True, text=True, check=True)
            rows.append({"setting": name, "threads": threads, "ops": json.loads(child.stdout.strip().splitlines()[-1])})
            print(name, threads, flush=True)
    out = {"cpu": cpu(), "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    # which ops differ between settings on this machine (so which ones each setting's pins reach)
    ops = list(rows[0]["ops"])
    print("ops whose hash differs between this machine's settings:",
          [o for o in ops if len({r["ops"][o] for r in rows}) > 1])
    for path in args.compare:
        other = json.loads(path.read_text())
        theirs = {(r["setting"], r["threads"]): r["ops"] for r in other["rows"]}
        print(f"against {path.name} ({other['cpu']}):")
        for r in rows:
            ref = theirs.get((r["setting"], r["threads"]))
            differ = "not measured there" if ref is None else [o for o in ops if ref.get(o) != r["ops"][o]] or "all same"
            print(f"  {r['setting']:<20} {r['threads']} thread(s): {differ}")


if __name__ == "__main__":
    main()
