#!/usr/bin/env python3
"""Writes the NumPy-made fixtures that tests/unit/test_npy.c and
tests/scripts/npy_*.blo read.  Run once with NumPy installed (Debian's
python3-numpy) from this directory:  python3 make_fixtures.py
The tests restate the values; rerunning changes only the .npz timestamps."""
import io

import numpy as np

np.save("f4.npy", np.array([[0.1, -2.5, 3.0], [1e-3, 65504.0, -0.0]], dtype="<f4"))
np.save("f2.npy", np.array([0.5, -1.5, 65504.0, 6e-08], dtype="<f2"))
np.save("u1.npy", np.array([0, 1, 127, 255], dtype="|u1"))
np.save("i1.npy", np.array([-128, -1, 0, 127], dtype="|i1"))
np.save("i2.npy", np.array([-32768, 32767], dtype="<i2"))
np.save("i4.npy", np.array([[-2147483648, 7], [2147483647, -7]], dtype="<i4"))
np.save("i8.npy", np.array([-5, 2**40, -2**62, 2**53], dtype="<i8"))
np.save("u2.npy", np.array([65535, 1], dtype="<u2"))
np.save("u4.npy", np.array([4294967295, 2], dtype="<u4"))
np.save("u8.npy", np.array([2**64 - 1, 3], dtype="<u8"))
np.save("b1.npy", np.array([True, False, True]))
np.save("be_f8.npy", np.array([1.5, -2.0, 1e300], dtype=">f8"))
np.save("be_i4.npy", np.array([-2, 258], dtype=">i4"))
np.save("scalar.npy", np.float64(2.75))
np.save("empty.npy", np.zeros((0, 3)))
# fortran order: element [i, j, k] = 100 i + 10 j + k
a = np.fromfunction(lambda i, j, k: 100 * i + 10 * j + k, (2, 3, 4))
np.save("fortran.npy", np.asfortranarray(a))
np.save("fortran_u1.npy", np.asfortranarray(a.astype("|u1")))
with open("v2.npy", "wb") as f:
    np.lib.format.write_array(f, np.array([[1.0, 2.0], [3.0, 4.0]]), version=(2, 0))
with open("v3.npy", "wb") as f:
    np.lib.format.write_array(f, np.array([5.0, 6.0]), version=(3, 0))
np.save("rank5.npy", np.arange(32.0).reshape(2, 2, 2, 2, 2))
np.save("rank7.npy", np.zeros((1, 1, 1, 1, 1, 1, 2)))
np.save("complex.npy", np.array([1 + 2j]))
np.save("structured.npy", np.zeros(2, dtype=[("x", "<f8"), ("y", "<i4")]))
np.save("unicode.npy", np.array(["ab", "c"]))
np.save("object.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
w = np.arange(6.0).reshape(2, 3)
np.savez("stored.npz", w=w, b=np.float32([0.25, -1]), **{"net/c1": np.uint8([[1, 2], [3, 4]]), "net/s": np.float64(9)})
np.savez_compressed("deflated.npz", w=w, labels=np.arange(10, dtype=np.int64), **{"net/c1": np.float32([1.5])})
np.savez("positional.npz", w, np.int16([-3]))   # members arr_0, arr_1
# corrupt files for the error tests: the data cut short, and a flipped data
# byte in a stored member (the CRC-32 no longer matches)
buf = io.BytesIO()
np.save(buf, np.arange(6.0))
open("truncated.npy", "wb").write(buf.getvalue()[:-4])
buf = io.BytesIO()
np.savez(buf, w=np.arange(4.0))
z = bytearray(buf.getvalue())
z[z.index(b"\x93NUMPY") + 128 + 9] ^= 0x40
open("bad_crc.npz", "wb").write(bytes(z))
# member names that are not field names, and two that map to the same field
np.savez("names.npz", **{"1st-layer": np.float64(1), "if": np.float64(2), "x.y/z w": np.float64(3)})
np.savez("collide.npz", **{"a-b": np.float64(1), "a_b": np.float64(2)})
