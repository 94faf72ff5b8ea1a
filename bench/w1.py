"""W1 in PyTorch (bench/w1.blo): per-feature weight decay for ridge regression,
cold start, T inner GD steps, hypergradient cg(K, tol = 0) or unroll(K = T),
outer Adam -- written the way a PyTorch bilevel library does it: the inner
loop with torch.optim.SGD (cg) or a differentiable loop with
torch.autograd.grad(create_graph=True) (unroll); Hessian-vector and mixed
products by double backward through one create_graph gradient.
Usage: python3 w1.py METHOD K T OUTER [n d nva]   (threads: BENCH_THREADS)
Prints "RESULT F=... time=..." (time: the solve, data generation excluded)."""
import os
import sys
import time

import torch

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
torch.set_default_dtype(torch.float64)
grad = torch.autograd.grad

method, K, T, outer_steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
n, d, nva = (int(a) for a in sys.argv[5:8]) if len(sys.argv) > 7 else (2000, 500, 1000)
lr, tol = 0.8, 0.0


def hm(v, p):
    return v - p * torch.floor(v / p)


def feats(i0, m):
    i = torch.arange(i0, i0 + m, dtype=torch.float64).reshape(m, 1)
    j = torch.arange(d, dtype=torch.float64).reshape(1, d)
    return 2 * hm(i * i * i * 3 + i * j * j * 5 + j * j * j * 7 + i * j * 11 + i * 13 + j * 17, 7919) / 7919 - 1


def noise(i0, m):
    i = torch.arange(i0, i0 + m, dtype=torch.float64)
    return 0.5 * (2 * hm(i * i * 17 + i * 5, 7907) / 7907 - 1)


jj = torch.arange(d, dtype=torch.float64)
w_true = 2 * hm(jj * jj * 3 + jj * 7, 101) / 101 - 1
Xtr = feats(0, n)
ytr = Xtr @ w_true + noise(0, n)
Xva = feats(n, nva)
yva = Xva @ w_true + noise(n, nva)


def f(w, lam):
    return torch.mean((Xtr @ w - ytr) ** 2) + torch.sum(torch.exp(lam) * w ** 2)


def F(w):
    return torch.mean((Xva @ w - yva) ** 2)


def inner_sgd(lam):
    """cold start, T steps of torch.optim.SGD at fixed lam"""
    w = torch.zeros(d, requires_grad=True)
    iopt = torch.optim.SGD([w], lr=lr)
    lam = lam.detach()
    for _ in range(T):
        iopt.zero_grad()
        f(w, lam).backward()
        iopt.step()
    return w.detach()


t0 = time.perf_counter()
lam = torch.full((d,), -3.0, requires_grad=True)
opt = torch.optim.Adam([lam], lr=0.05)
q = torch.zeros(d)
for k in range(outer_steps):
    if method == "unroll":
        assert K == T, "unroll(K) is benchmarked with K = T"
        w = torch.zeros(d, requires_grad=True)
        for _ in range(T):
            (g,) = grad(f(w, lam), w, create_graph=True)
            w = w - lr * g
        opt.zero_grad()
        F(w).backward()
    else:
        w = inner_sgd(lam).requires_grad_()
        (b,) = grad(F(w), w)            # grad_lam F = 0
        (gw,) = grad(f(w, lam), w, create_graph=True)

        def hvp(v):
            return grad(gw, w, v, retain_graph=True)[0]

        # conjugate gradient on H q = b, warm-started from the last outer step
        bnorm = torch.linalg.norm(b)
        if torch.linalg.norm(q) > 0:
            r = b - hvp(q)
        else:
            r = b.clone()
        p = r.clone()
        rs = torch.dot(r, r)
        for _ in range(K):
            if not torch.sqrt(rs) > tol * bnorm:
                break
            Ap = hvp(p)
            pAp = torch.dot(p, Ap)
            if not pAp > 0:
                break
            alpha = rs / pAp
            q = q + alpha * p
            r = r - alpha * Ap
            rs2 = torch.dot(r, r)
            p = r + (rs2 / rs) * p
            rs = rs2
        (mixed,) = grad(gw, lam, q)
        lam.grad = -mixed
    opt.step()
w = inner_sgd(lam)
Ffinal = F(w).item()
print("RESULT F=%.17g time=%.6f" % (Ffinal, time.perf_counter() - t0))
