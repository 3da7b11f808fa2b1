"""The ops of `mgr bench --ops`, timed in PyTorch the same way (median of 7 rounds of 30 calls
after warm-up, microseconds per call)."""
import time
import torch
import torch.nn.functional as F


def time_op(name, f, reps=30):
    for _ in range(3):
        f()
    rounds = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(reps):
            f()
        rounds.append((time.perf_counter() - t) * 1e6 / reps)
    print(f"{name:<44} {sorted(rounds)[3]:>9.1f} us")


def attention(x, heads=4):
    """A = softmax(Q_h K_h^T / sqrt(d_h)), then A V, heads back side by side (Q = K = V = x)."""
    b, n, d = x.shape
    h = x.reshape(b, n, heads, d // heads).transpose(1, 2)  # [B, H, N, d_h]
    a = torch.softmax(h @ h.transpose(2, 3) / (d // heads) ** 0.5, -1)  # [B, H, N, N]
    return (a @ h).transpose(1, 2).reshape(b, n, d)  # [B, N, d]


tokens, hidden = torch.randn(2816, 64), torch.randn(2816, 256)
w_qkv, w_ff = torch.nn.Linear(64, 64), torch.nn.Linear(64, 256)
with torch.no_grad():
    time_op("linear [2816,64] x [64,64]", lambda: w_qkv(tokens))
    time_op("linear [2816,64] x [64,256]", lambda: w_ff(tokens))
    q, k = torch.randn(256, 44, 16), torch.randn(256, 16, 44)
    time_op("batched matmul [256,44,16] x [256,16,44]", lambda: q @ k)
    qkv = torch.randn(64, 44, 64)
    time_op("attention [64,44,64], 4 heads (A, then A V)", lambda: attention(qkv))
    scores = torch.randn(64, 4, 44, 45)
    time_op("softmax [64,4,44,45] over the last dim", lambda: torch.softmax(scores, -1))
    time_op("gelu (erf) [2816,256]", lambda: F.gelu(hidden))
    norm, x3 = torch.nn.LayerNorm(64), tokens.reshape(64, 44, 64)
    time_op("layer norm [64,44,64]", lambda: norm(x3))
hidden_ad = torch.randn(2816, 256, requires_grad=True)


def gelu_fwd_bwd():
    hidden_ad.grad = None
    F.gelu(hidden_ad).sum().backward()


time_op("gelu forward + backward [2816,256]", gelu_fwd_bwd)
scores_ad = torch.randn(64, 4, 44, 45, requires_grad=True)
weights = torch.randn(64, 4, 44, 45)


def softmax_fwd_bwd():
    scores_ad.grad = None
    (torch.softmax(scores_ad, -1) * weights).sum().backward()


time_op("softmax forward + backward [64,4,44,45]", softmax_fwd_bwd)
tokens_ad = torch.randn(2816, 64, requires_grad=True)


def linear_fwd_bwd():
    tokens_ad.grad = None
    w_ff(tokens_ad).sum().backward()


time_op("linear forward + backward [2816,64] x [64,256]", linear_fwd_bwd)
qkv_ad = torch.randn(64, 44, 64, requires_grad=True)


def attention_fwd_bwd():
    qkv_ad.grad = None
    attention(qkv_ad).sum().backward()


time_op("attention forward + backward [64,44,64]", attention_fwd_bwd)
