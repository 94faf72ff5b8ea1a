"""W2 in PyTorch (bench/w2.blo): dataset distillation on Fashion-MNIST, 10
learned images Z, linear softmax classifier W (784 x 10), warm start, T inner
GD steps differentiated by unrolling (torch.autograd.grad with
create_graph=True through every step, as higher/TorchOpt do), outer
torch.optim.Adam on Z; the outer loss is the cross-entropy on the first NTR
training images.
Usage: python3 w2.py [T OUTER NTR DIR]   (threads: BENCH_THREADS)
Prints "RESULT F=... time=..." (time: the solve; reading the data excluded)."""
import gzip
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as Fn

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
torch.set_default_dtype(torch.float64)
grad = torch.autograd.grad

a = sys.argv[1:]
T = int(a[0]) if len(a) > 0 else 10
outer_steps = int(a[1]) if len(a) > 1 else 50
ntr = int(a[2]) if len(a) > 2 else 10000
ddir = a[3] if len(a) > 3 else "/usr/share/datasets/fashion-mnist"
lr = 0.1


def idx(name, skip, count):
    with gzip.open(os.path.join(ddir, name), "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8)[skip:skip + count]


Xtr = torch.from_numpy(idx("train-images-idx3-ubyte.gz", 16, ntr * 784).astype(np.float64)).reshape(ntr, 784) / 255
ytr = torch.from_numpy(idx("train-labels-idx1-ubyte.gz", 8, ntr).astype(np.int64))
yd = torch.arange(10)


def hm(v, p):
    return v - p * torch.floor(v / p)


c = torch.arange(10, dtype=torch.float64).reshape(10, 1)
k = torch.arange(784, dtype=torch.float64).reshape(1, 784)
Z = (0.1 * (2 * hm(c * c * 31 + k * k * 7 + c * k * 13 + k * 3, 7919) / 7919 - 1)).requires_grad_()


def f(Z, W):
    return Fn.cross_entropy(Z @ W, yd)


def F(W):
    return Fn.cross_entropy(Xtr @ W, ytr)


t0 = time.perf_counter()
opt = torch.optim.Adam([Z], lr=0.01)
W = torch.zeros(784, 10)
for _ in range(outer_steps):
    W = W.detach().requires_grad_()        # warm start
    for _ in range(T):
        (g,) = grad(f(Z, W), W, create_graph=True)
        W = W - lr * g
    (Z.grad,) = grad(F(W), Z)
    opt.step()
W = W.detach().requires_grad_()            # the final inner loop at the final Z
for _ in range(T):
    (g,) = grad(f(Z.detach(), W), W)
    W = (W - lr * g).detach().requires_grad_()
with torch.no_grad():
    Ffinal = F(W).item()
print("RESULT F=%.17g time=%.6f" % (Ffinal, time.perf_counter() - t0))
