"""Benchmark 6: model FLOPs utilisation of PowerBERT's training step on a GPU, bert-base, bf16.

    python bench/gpu_mfu.py --quick      # a few minutes on an H100/H200 (four variants: two compiles)
    python bench/gpu_mfu.py              # more steps, more variants (batch sizes, attention)

A randomly initialised BertModel of bert-base-uncased's shape (12 layers, hidden 768, vocab
30522; no network needed) inside PowerBERT's MultitaskBert, trained on sst-shaped batches of
128 tokens per row through `powerbert.training.loop.TrainStep`: the product's forward under bf16
autocast (or, in the "bf16 weights" variants, on a bf16 copy of the encoder with AdamW on the
fp32 weights: `train_weights = "bf16"`), loss, backward (via the gradient combiner), clipping
and AdamW (fused on CUDA).

MFU = 6 x non-embedding parameters x tokens per second / the device's dense bf16 peak (read
from the device name; --peak-tflops overrides). The same run also times a large bf16 matmul, the
"achievable peak" of this card, and reports the step's throughput against it too.
Target: MFU >= 35%. With no GPU it says so and exits 0.

Imports only torch, transformers and PowerBERT modules that need nothing more (no sqlite-utils,
textual or the MiniLM package), so it runs on a bare GPU box with a copy of the repository.
"""

from __future__ import annotations

import argparse
import sys
import time

import common  # noqa: F401  - puts the checkout on sys.path
import torch

TARGET_MFU = 0.35
SEQ = 128

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, in TFLOP/s.
PEAKS = [
    ("H100 PCIE", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4),
    ("H20", 148.0), ("B200", 2250.0), ("A100", 312.0), ("A10G", 70.0), ("A10", 125.0), ("L40S", 362.0),
    ("L40", 181.0), ("L4", 121.0), ("4090", 165.2), ("A6000", 154.8),
]


def peak_tflops(name: str) -> float | None:
    upper = name.upper()
    for key, value in PEAKS:
        if key in upper:
            return value
    return None


def bert_base(attn: str):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512)
    model = BertModel(config)
    model.set_attn_implementation(attn)  # transformers' public switch; raises if `attn` is unavailable
    return model


def matmul_tflops(n: int = 8192, reps: int = 20) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(batch_size: int, attn: str, compile_encoder: bool, warmup: int, steps: int, device: str = "cuda",
            profile: bool = False, weights: str = "fp32") -> dict:
    from powerbert.config import HeadConfig, TrainConfig
    from powerbert.data.batching import Batch
    from powerbert.model.multitask import MultitaskBert
    from powerbert.model.surgery import make_combiner
    from powerbert.training.step import TrainStep, make_optimizer

    device = torch.device(device)
    torch.manual_seed(0)
    config = TrainConfig(tasks=("sst",), precision="bf16", device=str(device), batch_size=batch_size, lr=1e-4,
                         attention=attn, train_weights=weights)
    model = MultitaskBert(bert_base(attn), config.tasks, HeadConfig()).to(device)
    embedding = sum(p.numel() for p in model.encoder.embeddings.parameters())
    pooler = sum(p.numel() for p in model.encoder.pooler.parameters()) if getattr(model.encoder, "pooler", None) else 0
    # The pooler's output is not used by the heads (they pool the token states), so it has no
    # gradient and its FLOPs are not "model FLOPs": left out with the embeddings.
    non_embedding = sum(p.numel() for p in model.encoder.parameters()) - embedding - pooler
    optimizer = make_optimizer(model, config)
    step_fn = TrainStep(model, optimizer, make_combiner(config.surgery, config.seed), config, device)
    if compile_encoder:
        step_fn.net.encoder.compile()  # the encoder the passes run on (a bf16 copy, with bf16 weights)
    model.train()

    def batch() -> Batch:
        ids = torch.randint(1000, 30000, (batch_size, SEQ), device=device)
        ids[:, 0], ids[:, -1] = 101, 102
        a = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        labels = torch.randint(0, 5, (batch_size,), device=device).float()
        return Batch("sst", a, None, labels, list(range(batch_size)))

    batches = [batch() for _ in range(4)]
    compile_start = time.perf_counter()
    for k in range(warmup):
        losses = step_fn({"sst": batches[k % 4]}, k)
        float(losses["sst"])  # the training loop reads every step's loss too
    sync(device)
    warmup_s = time.perf_counter() - compile_start
    start = time.perf_counter()
    for k in range(steps):
        losses = step_fn({"sst": batches[k % 4]}, warmup + k)
        float(losses["sst"])
    sync(device)
    elapsed = time.perf_counter() - start
    tokens_per_s = batch_size * SEQ * steps / elapsed
    if profile:  # where the step's GPU time goes: the top kernels
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for k in range(3):
                float(step_fn({"sst": batches[k % 4]}, k)["sst"])
            sync(device)
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=70), flush=True)
    result = dict(batch=batch_size, attn=attn, compiled=compile_encoder, weights=weights, step_ms=1000 * elapsed / steps,
                  tokens_per_s=tokens_per_s, model_tflops=6 * non_embedding * tokens_per_s / 1e12,
                  non_embedding=non_embedding, warmup_s=warmup_s, loss=float(losses["sst"]),
                  memory_gb=torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"))
    del model, optimizer, step_fn, batches
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and variants: a few minutes on an H100")
    parser.add_argument("--batch-size", type=int, default=512, help="rows of 128 tokens per step")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, if not known by name")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--profile", action="store_true", help="print the top GPU kernels of each variant")
    args = parser.parse_args(argv)
    common.header("bench 6: bert-base training step MFU on a GPU (bf16 autocast)")
    if not torch.cuda.is_available():
        print("no GPU found (torch.cuda.is_available() is False): nothing to measure on this machine.")
        print("Run `python bench/gpu_mfu.py --quick` on a CUDA machine; it needs only torch and transformers.")
        print("RATIO MFU: n/a (no GPU found) - skipped")
        return 0

    name = torch.cuda.get_device_name()
    peak = args.peak_tflops or peak_tflops(name)
    print(f"   device {name}, torch {torch.__version__}, cuda {torch.version.cuda}, "
          f"peak bf16 dense {f'{peak:.1f} TFLOP/s' if peak else 'unknown'}", flush=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    achievable = matmul_tflops()
    print(f"matmul 8192^3 bf16: {achievable:.1f} TFLOP/s achieved"
          + (f" ({achievable / peak:.1%} of the data-sheet peak)" if peak else ""), flush=True)
    if peak is None:
        peak = achievable
        print("   unknown device: MFU is reported against the measured matmul instead")

    warmup, steps = (5, 20) if args.quick else (10, 50)
    # (batch, attention, torch.compile, the weights the passes run on)
    variants = [(args.batch_size, "sdpa", False, "fp32"), (args.batch_size, "sdpa", False, "bf16")]
    if not args.no_compile:
        variants += [(args.batch_size, "sdpa", True, "fp32"), (args.batch_size, "sdpa", True, "bf16")]
    if not args.quick:
        variants += [(args.batch_size, "eager", False, "fp32"), (args.batch_size * 2, "sdpa", False, "fp32"),
                     (args.batch_size * 2, "sdpa", False, "bf16")]
        if not args.no_compile:
            variants.append((args.batch_size * 2, "sdpa", True, "bf16"))
    results = []
    for batch_size, attn, compiled, weights in variants:
        label = (f"batch {batch_size} x {SEQ}, attention {attn}, {'torch.compile' if compiled else 'eager'}, "
                 f"{'bf16 weights' if weights == 'bf16' else 'fp32 weights under autocast'}")
        try:
            r = measure(batch_size, attn, compiled, warmup + (3 if compiled else 0), steps, profile=args.profile, weights=weights)
        except Exception as exc:  # e.g. out of memory, or compile unsupported: report, go on
            print(f"{label}: failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", flush=True)
            torch.cuda.empty_cache()
            continue
        r["mfu"] = r["model_tflops"] / peak
        results.append(r)
        print(f"{label}: {r['step_ms']:.1f} ms/step, {r['tokens_per_s']:,.0f} tokens/s, "
              f"{r['model_tflops']:.1f} model TFLOP/s, MFU {r['mfu']:.1%}, "
              f"{r['model_tflops'] / achievable:.1%} of the measured matmul; "
              f"warm-up {r['warmup_s']:.1f} s, peak memory {r['memory_gb']:.1f} GiB, loss {r['loss']:.3f}", flush=True)
    if not results:
        print("RATIO MFU: every variant failed")
        return 1
    best = max(results, key=lambda r: r["mfu"])
    print(f"non-embedding parameters {best['non_embedding']:,}; best: batch {best['batch']}, {best['attn']}, "
          f"{'compiled' if best['compiled'] else 'eager'}, {best['weights']} weights")
    return common.verdict("MFU (best variant, as a fraction)", best["mfu"], TARGET_MFU, at_least=True)


if __name__ == "__main__":
    sys.exit(main())
