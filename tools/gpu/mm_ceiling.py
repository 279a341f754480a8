#!/usr/bin/env python3
# tools/gpu/mm_ceiling.py (on a GPU machine with PyTorch): what cuBLAS itself reaches here.
# bf16 GEMM ceiling on this GPU (torch.mm = cuBLAS), at the product shapes of our configs: fwd (M=tokens),
# dgrad and wgrad; TFLOP/s per shape, median of 20 timed runs after warm-up.
import torch, time
torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True
def t(M, N, K, tag):
    a = torch.randn(M, K, device='cuda', dtype=torch.bfloat16); b = torch.randn(K, N, device='cuda', dtype=torch.bfloat16)
    for _ in range(5): c = a @ b
    torch.cuda.synchronize(); ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]; ts = []
    for _ in range(20):
        ev[0].record(); c = a @ b; ev[1].record(); torch.cuda.synchronize(); ts.append(ev[0].elapsed_time(ev[1]))
    ts.sort(); ms = ts[len(ts) // 2]
    print(f"| {tag} | {M}x{N}x{K} | {ms*1e3:.1f} us | {2*M*N*K/ms/1e9:.0f} TFLOP/s |")
print("| shape | MxNxK | time | rate |\n|---|---|---:|---:|")
for H, I, V, tag in [(768, 2048, 50304, 'gpt2s'), (2048, 8192, 65536, '1b')]:
    M = 8192
    t(M, 3 * H, H, tag + ' qkv fwd'); t(M, H, H, tag + ' o fwd'); t(M, 2 * I, H, tag + ' gate+up fwd'); t(M, H, I, tag + ' down fwd')
    t(M, H, 2 * I, tag + ' gate+up dgrad'); t(2 * I, H, M, tag + ' gate+up wgrad'); t(M, V, H, tag + ' cls fwd'); t(V, H, M, tag + ' cls wgrad')
t(8192, 8192, 8192, 'square')
