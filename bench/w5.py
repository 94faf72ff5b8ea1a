"""W5 in PyTorch (bench/w5.blo): the LeNet of dataset distillation on 28 x 28
one-channel images (deterministic hash data of MNIST's shape), float64, CPU:
torch.nn.functional.conv2d / max_pool2d / relu / cross_entropy; the unrolled
hypergradient by torch.autograd.grad(create_graph=True) through every inner step.
Usage: python3 w5.py MODE COUNT [B]   (MODE fwd, bwd or hyper; threads: BENCH_THREADS)
Prints "RESULT F=... time=..." (time: the timed part, as in w5.blo)."""
import os
import sys
import time

import torch
import torch.nn.functional as Fn

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
torch.set_default_dtype(torch.float64)
grad = torch.autograd.grad

mode = sys.argv[1]
count = int(sys.argv[2])
B = int(sys.argv[3]) if len(sys.argv) > 3 else 256


def hm(v, p):
    return v - p * torch.floor(v / p)


def images(n, s):
    b = (torch.arange(n, dtype=torch.float64) + s).reshape(n, 1, 1, 1)
    r = torch.arange(28, dtype=torch.float64).reshape(1, 1, 28, 1)
    c = torch.arange(28, dtype=torch.float64).reshape(1, 1, 1, 28)
    return hm(b * b * 7 + r * r * 3 + c * c * 5 + b * r * 11 + r * c * 13 + b * c * 17 + b, 251) / 251


def wts(shp, k, s):
    n = 1
    for d in shp:
        n *= d
    i = torch.arange(n, dtype=torch.float64) + k
    return (s * (2 * hm(i * i * 3 + i * 7, 509) / 509 - 1)).reshape(shp)


X = images(B, 0)
ar = torch.arange(B, dtype=torch.float64)
y = hm(ar * ar * 3 + ar * 7, 10).long()
init = [wts([6, 1, 5, 5], 0, 0.2), wts([6], 1, 0.1), wts([16, 6, 5, 5], 2, 0.08), wts([16], 3, 0.1),
        wts([10, 256], 4, 0.06), wts([10], 5, 0.1)]
yz = torch.arange(10)


def lenet(p, x):
    c1, b1, c2, b2, f, fb = p
    h = Fn.max_pool2d(Fn.relu(Fn.conv2d(x, c1, b1)), 2)
    h2 = Fn.max_pool2d(Fn.relu(Fn.conv2d(h, c2, b2)), 2)
    return h2.reshape(h2.shape[0], 256) @ f.T + fb


if mode == "fwd":
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(count):
            E = Fn.cross_entropy(lenet(init, X), y)
    t = time.perf_counter() - t0
    print("RESULT F=%.17g time=%.6f" % (E.item(), t))
elif mode == "bwd":
    p = [w.clone().requires_grad_() for w in init]
    t0 = time.perf_counter()
    for _ in range(count):
        g = grad(Fn.cross_entropy(lenet(p, X), y), p)
    t = time.perf_counter() - t0
    print("RESULT F=%.17g time=%.6f" % (sum((gi * gi).sum().item() for gi in g), t))
elif mode == "hyper":
    # blo's solve (docs/BILEVEL.md): per outer step a cold start at init, 10 SGD
    # steps on f(Z, w), the unrolled hypergradient of F(w_10), an SGD step on Z;
    # after the last one a final inner loop at the final Z, and F there.
    lr, olr, T = 0.1, 0.1, 10
    Z = images(10, 1000).requires_grad_()
    t0 = time.perf_counter()
    for _ in range(count):
        w = [v.clone().requires_grad_() for v in init]
        for _ in range(T):
            g = grad(Fn.cross_entropy(lenet(w, Z), yz), w, create_graph=True)
            w = [wi - lr * gi for wi, gi in zip(w, g)]
        (hg,) = grad(Fn.cross_entropy(lenet(w, X), y), Z)
        with torch.no_grad():
            Z -= olr * hg
    w = [v.clone().requires_grad_() for v in init]
    Zd = Z.detach()
    for _ in range(T):
        g = grad(Fn.cross_entropy(lenet(w, Zd), yz), w)
        w = [(wi - lr * gi).detach().requires_grad_() for wi, gi in zip(w, g)]
    with torch.no_grad():
        Ff = Fn.cross_entropy(lenet(w, X), y).item()
    print("RESULT F=%.17g time=%.6f" % (Ff, time.perf_counter() - t0))
else:
    sys.exit("w5.py: MODE is fwd, bwd or hyper, not " + mode)
