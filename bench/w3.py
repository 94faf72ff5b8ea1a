"""W3 in PyTorch (bench/w3.blo): P6 of docs/METHODS.md, cold start, T inner GD steps
(lr 0.5) differentiated by unrolling (torch.autograd.grad with
create_graph=True), outer torch.optim.SGD (lr 0.1) on the scalar u.
Usage: python3 w3.py [OUTER T]   (threads: BENCH_THREADS)
Prints "RESULT F=... time=..."."""
import os
import sys
import time

import torch

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
torch.set_default_dtype(torch.float64)
grad = torch.autograd.grad
outer_steps = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
T = int(sys.argv[2]) if len(sys.argv) > 2 else 10
lr = 0.5


def f(u, w):
    return 0.5 * (w[0] + u * w[1] - 1) ** 2


def F(w):
    return 0.5 * torch.sum((w - 1) ** 2)


def inner(u, create_graph):
    w = torch.zeros(2, requires_grad=True)
    for _ in range(T):
        (g,) = grad(f(u, w), w, create_graph=create_graph)
        w = w - lr * g
        if not create_graph:
            w = w.detach().requires_grad_()
    return w


t0 = time.perf_counter()
u = torch.tensor(1.0, requires_grad=True)
opt = torch.optim.SGD([u], lr=0.1)
for _ in range(outer_steps):
    w = inner(u, True)
    (u.grad,) = grad(F(w), u)
    opt.step()
w = inner(u.detach(), False)
Ffinal = F(w).item()
print("RESULT F=%.17g time=%.6f u=%.17g" % (Ffinal, time.perf_counter() - t0, u.item()))
