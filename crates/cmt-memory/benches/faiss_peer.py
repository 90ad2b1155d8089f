"""faiss IndexFlatIP peer for the cmt-memory top-k bench (benches/topk.rs).

Protocol over stdin/stdout (driven by the Rust bench):
  in:  "N R K THREADS\n" then N*R little-endian f32 (the keys, row-major)
  out: "ready <faiss version>\n"
  in:  "search NQ ITERS\n" then NQ*R f32 (the questions)
  out: "time <seconds for ITERS searches, measured here with perf_counter>\n"
       "ids <top-k ids of question 0, best first>\n"
  in:  "quit\n"
One untimed search precedes every timed loop.
"""
import sys
import time

import faiss
import numpy as np


def read_f32(inp, count):
    buf = np.empty(count, dtype="<f4")
    view = memoryview(buf).cast("B")
    got = 0
    while got < len(view):
        n = inp.readinto(view[got:])
        if not n:
            raise EOFError("stream ended inside an array")
        got += n
    return buf


def main():
    inp = sys.stdin.buffer
    out = sys.stdout
    n, r, k, threads = map(int, inp.readline().split())
    faiss.omp_set_num_threads(threads)
    xb = read_f32(inp, n * r).reshape(n, r)
    index = faiss.IndexFlatIP(r)
    index.add(xb)
    del xb
    print("ready", faiss.__version__, file=out, flush=True)
    while True:
        line = inp.readline()
        if not line:
            break
        cmd = line.split()
        if cmd[0] == b"quit":
            break
        if cmd[0] != b"search":
            raise ValueError(f"unknown command {line!r}")
        nq, iters = int(cmd[1]), int(cmd[2])
        q = read_f32(inp, nq * r).reshape(nq, r)
        _, ids = index.search(q, k)
        t0 = time.perf_counter()
        for _ in range(iters):
            index.search(q, k)
        dt = time.perf_counter() - t0
        print(f"time {dt!r}", file=out)
        print("ids " + " ".join(str(i) for i in ids[0]), file=out, flush=True)


if __name__ == "__main__":
    main()
