#!/usr/bin/env python3
"""Swap time of several trees of the code, interleaved: one process per tree, each running batches of calls in turn,
so every tree sees the same host load (a shared VM's speed swings +-15% within minutes, more than most changes).

    python bench/bench_swap_ab.py TREE_A TREE_B [TREE_C ...] [--rounds 30] [--calls 15]
    e.g. `git worktree add /tmp/pre <commit>` for the tree before a change, then this checkout

Per tree: the median (and fastest) of the batches' median ms for one face (obama.jpg's ~253 px face on 640x480) and
per face for two (a second face at the frame's edge), as ``bench/bench_render_ab.py`` sets them up (the full swap with
the source's shape where the tree has it). Then each tree over the first: the median of the ratios of batches run
side by side, with their quartiles.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def serve(tree: str) -> None:
    """The child: set up the swap of ``tree``, then for each line N on stdin run N calls and print the medians."""
    sys.argv = ["bench_render_ab.py", tree]
    scope: dict = {"__file__": str(HERE / "bench_render_ab.py")}
    exec((HERE / "bench_render_ab.py").read_text().split("one=t(")[0], scope)  # the A/B bench's setup, not its timing
    swap_faces, frame, tri, tex = scope["swap_faces"], scope["frame"], scope["morph"].tri, scope["tex"]
    shape, lms, out, buf = scope["shape"], scope["lms"], scope["out"], scope["buf"]

    def one() -> None:
        swap_faces(frame, [shape(0)], tri, tex, landmarks=[lms[0]], out=out, buffers=buf)

    def two() -> None:
        swap_faces(frame, [shape(0), shape(1)], tri, tex, landmarks=list(lms), out=out, buffers=buf)

    for _ in range(10):
        one()
        two()
    print("ready", flush=True)
    for line in sys.stdin:
        t1, t2 = [], []
        for _ in range(int(line)):
            t0 = time.perf_counter()
            one()
            t_mid = time.perf_counter()
            two()
            t1.append(t_mid - t0)
            t2.append((time.perf_counter() - t_mid) / 2)
        print(f"{statistics.median(t1) * 1e3:.4f} {statistics.median(t2) * 1e3:.4f}", flush=True)


def quartiles(x: list[float]) -> tuple[float, float, float]:
    s = sorted(x)
    return s[len(s) // 4], statistics.median(s), s[(3 * len(s)) // 4]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="+", help="source trees (the first is the reference)")
    ap.add_argument("--rounds", type=int, default=30, help="batches per tree")
    ap.add_argument("--calls", type=int, default=15, help="calls per batch (each: one face, then two faces)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.trees[0])
        return
    env = dict(os.environ)
    env.setdefault("DAMDNET_ASSETS", str(HERE.parents[1] / "shared" / "assets"))
    procs = [subprocess.Popen([sys.executable, __file__, "--serve", t], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env) for t in args.trees]
    for t, p in zip(args.trees, procs):
        if p.stdout.readline().strip() != "ready":
            raise SystemExit(f"{t}: the swap did not start")
    res: list[list[tuple[float, float]]] = [[] for _ in args.trees]
    for r in range(args.rounds):
        order = list(range(len(procs)))
        for i in (order if r % 2 == 0 else order[::-1]):  # alternate who goes first
            procs[i].stdin.write(f"{args.calls}\n")
            procs[i].stdin.flush()
            res[i].append(tuple(float(x) for x in procs[i].stdout.readline().split()))
    for p in procs:
        p.stdin.close()
        p.wait()
    for t, rr in zip(args.trees, res):
        a, b = [x for x, _ in rr], [y for _, y in rr]
        print(f"{t}: 1 face {statistics.median(a):.2f} ms (fastest {min(a):.2f}), "
              f"2 faces {statistics.median(b):.2f} ms a face (fastest {min(b):.2f})")
    for t, rr in zip(args.trees[1:], res[1:]):
        q1 = quartiles([x[0] / y[0] for x, y in zip(rr, res[0])])
        q2 = quartiles([x[1] / y[1] for x, y in zip(rr, res[0])])
        print(f"{t} / {args.trees[0]}: 1 face {q1[1]:.3f}x [{q1[0]:.3f}-{q1[2]:.3f}], "
              f"2 faces {q2[1]:.3f}x [{q2[0]:.3f}-{q2[2]:.3f}] (median of paired batches [quartiles])")


if __name__ == "__main__":
    main()
