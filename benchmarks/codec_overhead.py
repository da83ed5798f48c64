"""Python-side cost of the array codec, next to copying a bytes body of the same size.

    python benchmarks/codec_overhead.py

Prints ns per call (best of 5) for encode, decode with copy, decode as a view,
for a 1 KiB float64 array and a small aligned structured array.
"""

import timeit

import numpy as np

from pysyncq.codec import decode_array, encode_array

CASES = {
    "f8[128] (1 KiB)": np.arange(128.0),
    "struct[4] aligned": np.zeros(
        4, np.dtype([("x", "<f4"), ("y", "<i2"), ("n", "S6"), ("v", "<f8", (2,))], align=True)
    ),
}


def ns(stmt, env, number=50_000):
    return min(timeit.repeat(stmt, globals=env, number=number, repeat=5)) / number * 1e9


def main():
    for name, arr in CASES.items():
        desc, data = encode_array(arr, 5)
        body = desc + data.tobytes()
        env = {
            "encode_array": encode_array,
            "decode_array": decode_array,
            "arr": arr,
            "body": body,
            "mv": memoryview(bytearray(body)),
        }
        print(f"{name}: desc {len(desc)} B + data {data.nbytes} B")
        for label, stmt in [
            ("encode_array", "encode_array(arr, 5)"),
            ("decode_array copy (bytes)", "decode_array(body)"),
            ("decode_array view (bytes)", "decode_array(body, copy=False)"),
            ("decode_array view (memoryview)", "decode_array(mv, copy=False)"),
            ("baseline: bytes(body)", "bytes(mv)"),
        ]:
            print(f"  {label:32s} {ns(stmt, env):7.0f} ns")


if __name__ == "__main__":
    main()
