#!/usr/bin/env python3
"""SHA-256 of every output of ``run_stream.py`` on fixed inputs: a refactor must leave them byte for byte the same.

    python bench/output_hashes.py --write           record tests/fixtures/output_hashes.json (before a change)
    python bench/output_hashes.py                   run again and compare (exit 1 and a list of differences)

Cases: two shared clips (d0.mp4, 78 frames; d18.mp4) and the synthetic demo (``synthetic:2``), each with tracks as
CSV + meshes (npz) + overlay video, tracks as JSONL, and tracks as NPZ with ``--tracks-params``.

Text and video files are hashed as bytes. NPZ files are zip archives whose members carry the time they were written,
so an NPZ is hashed by its content instead: every member's name, then its bytes (the .npy header: dtype, shape,
order, then the data), in name order.

The bytes depend on the CPU: ONNX Runtime's and numba's kernels pick their vector code by the processor, and the float
roundings differ in the last bits (an AVX-512 EPYC and the earlier hosts gave other hashes for the same commit).
So the fixture keeps the hashes per machine (:func:`machine_key`: CPU vendor, family, model and vector width);
``--write`` records this machine's, and the test skips on a machine with none recorded. On a new machine, record
from the code before a change, then compare after it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "output_hashes.json"
DRIVING = "KwaiVGI/LivePortrait/assets/examples/driving"


def assets_root() -> Path:
    return Path(os.environ.get("DAMDNET_ASSETS") or REPO.parent / "shared" / "assets").resolve()


def sources() -> dict[str, str]:
    root = assets_root()
    return {"d0": str(root / DRIVING / "d0.mp4"), "d18": str(root / DRIVING / "d18.mp4"), "synthetic": "synthetic:2"}


# name -> extra flags (OUT is replaced by the case's output folder)
RUNS = {
    "csv": ["--tracks", "OUT/tracks.csv", "--meshes", "OUT/meshes", "--out", "OUT/overlay.mp4"],
    "jsonl": ["--tracks", "OUT/tracks.jsonl"],
    "npz": ["--tracks", "OUT/tracks.npz", "--tracks-params"],
}


def machine_key() -> str:
    """This machine's CPU as the fixture's key, e.g. ``x86_64 AuthenticAMD family 26 model 2 avx512``: what decides
    which vector kernels run (a different key may round differently)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    width = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse"
    cpu = f"{info.get('vendor_id', platform.processor() or 'cpu')} family {info.get('cpu family', '?')} " \
          f"model {info.get('model', '?')}"
    return f"{platform.machine()} {cpu} {width}"


def recorded(key: str | None = None) -> dict | None:
    """The hashes recorded for machine ``key`` (default this one), or None."""
    if not FIXTURE.is_file():
        return None
    return json.loads(FIXTURE.read_text()).get("machines", {}).get(key or machine_key())


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    if path.suffix == ".npz":
        with zipfile.ZipFile(path) as zf:
            for name in sorted(zf.namelist()):
                h.update(name.encode() + b"\0")
                h.update(zf.read(name))
        return "npz:" + h.hexdigest()
    h.update(path.read_bytes())
    return h.hexdigest()


def run_case(src: str, flags: list[str], out: Path, python: str, cwd: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    args = [a.replace("OUT", str(out)) for a in flags]
    cmd = [python, str(cwd / "run_stream.py"), "--source", src, "--progress", "false", *args]
    env = {**os.environ, "DAMDNET_ASSETS": str(assets_root()), "DAMDNET_OFFLINE": "1"}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-3000:]}")
    return {str(p.relative_to(out)): file_hash(p) for p in sorted(out.rglob("*")) if p.is_file()}


def collect(python: str = sys.executable, cwd: Path = REPO, only: list[str] | None = None) -> dict[str, dict]:
    result = {}
    with tempfile.TemporaryDirectory(prefix="damdnet-hashes-") as tmp:
        for sname, src in sources().items():
            for rname, flags in RUNS.items():
                case = f"{sname}/{rname}"
                if only and case not in only:
                    continue
                result[case] = run_case(src, flags, Path(tmp) / sname / rname, python, cwd)
                print(f"{case}: {len(result[case])} files", file=sys.stderr)
    return result


def compare(expected: dict, got: dict) -> list[str]:
    problems = []
    for case in sorted(set(expected) | set(got)):
        a, b = expected.get(case, {}), got.get(case, {})
        for name in sorted(set(a) | set(b)):
            if a.get(name) != b.get(name):
                problems.append(f"{case}/{name}: expected {a.get(name)}, got {b.get(name)}")
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true",
                   help=f"record this machine's hashes in {FIXTURE.relative_to(REPO)} (other machines' are kept)")
    p.add_argument("--checkout", default=str(REPO), help="the repository whose run_stream.py runs")
    p.add_argument("--case", action="append", help="only this case (e.g. d0/csv); repeatable")
    args = p.parse_args()
    got = collect(cwd=Path(args.checkout), only=args.case)
    key = machine_key()
    if args.write:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        data = json.loads(FIXTURE.read_text()) if FIXTURE.is_file() else {}
        machines = data.get("machines", {})
        machines[key] = {**machines.get(key, {}), **got} if args.case else got
        FIXTURE.write_text(json.dumps({"machines": machines}, indent=1, sort_keys=True) + "\n")
        print(f"wrote {FIXTURE} for {key}", file=sys.stderr)
        return 0
    expected = recorded(key)
    if expected is None:
        print(f"no hashes recorded for this machine ({key}): record them with --write on the code before a change",
              file=sys.stderr)
        return 2
    if args.case:
        expected = {k: v for k, v in expected.items() if k in args.case}
    problems = compare(expected, got)
    for line in problems:
        print(line)
    print("same" if not problems else f"{len(problems)} differences", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
