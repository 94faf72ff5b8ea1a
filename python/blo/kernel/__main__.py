"""python3 -m blo.kernel install [--user | --prefix DIR] [--name NAME]: installs
the kernel spec.  python3 -m blo.kernel -f CONNECTION_FILE: runs the kernel
(what Jupyter does with the installed spec)."""
import argparse
import json
import os
import shutil
import sys
import tempfile


def install(argv):
    ap = argparse.ArgumentParser(prog="python3 -m blo.kernel install",
                                 description="Install the blo Jupyter kernel spec.")
    ap.add_argument("--user", action="store_true", help="install for this user (~/.local/share/jupyter)")
    ap.add_argument("--prefix", help="install under PREFIX/share/jupyter/kernels (e.g. a virtualenv)")
    ap.add_argument("--name", default="blo", help="kernel name (default: blo)")
    args = ap.parse_args(argv)
    from jupyter_client.kernelspec import KernelSpecManager
    # The kernel runs with this Python; the package's directory goes on its
    # path, so a checkout used with PYTHONPATH=python works as well as an install.
    pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {"PYTHONPATH": pkg_parent}
    if os.environ.get("BLO_LIBRARY"):
        env["BLO_LIBRARY"] = os.path.abspath(os.environ["BLO_LIBRARY"])
    spec = {
        "argv": [sys.executable, "-m", "blo.kernel", "-f", "{connection_file}"],
        "display_name": "blo",
        "language": "blo",
        "interrupt_mode": "message",
        "env": env,
    }
    d = tempfile.mkdtemp()
    try:
        with open(os.path.join(d, "kernel.json"), "w") as f:
            json.dump(spec, f, indent=1)
        dest = KernelSpecManager().install_kernel_spec(d, args.name, user=args.user, prefix=args.prefix)
    finally:
        shutil.rmtree(d)
    print("installed the blo kernel spec in %s" % dest)
    return 0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "install":
        return install(sys.argv[2:])
    from ipykernel.kernelapp import IPKernelApp
    from blo.kernel import BloKernel
    IPKernelApp.launch_instance(kernel_class=BloKernel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
