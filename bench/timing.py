#!/usr/bin/env python3
"""Time one command: a few warm-up runs, then N timed runs; write the times as JSON.

    timing.py --label NAME --bytes N --out RESULT.json [--runs 3] [--warmup 1]
              [--rm PATH] [--capture] [--timeout SECONDS] -- COMMAND ARG...

--bytes    bytes the command processes, to turn seconds into MB/s (MB = 10^6 bytes)
--rm PATH  deleted (if there) before every run, warm-ups included, outside the timing
--capture  keep the standard output of one run in the result (for checking a printed hash)

Uses hyperfine when it is on PATH (and BENCH_NO_HYPERFINE is not set); otherwise times each run
with time.perf_counter() around subprocess.run(). Standard library only. Exits non-zero, with
the command's output tail, when a run fails or takes longer than --timeout.
"""

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def tail(data, n=2000):
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else (data or "")
    return text[-n:]


def remove(path):
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def run_once(cmd, timeout, capture):
    """One run; returns (seconds, stdout bytes)."""
    start = time.perf_counter()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        sys.exit(f"timing: {shlex.join(cmd)} took longer than {timeout:g} s")
    except OSError as e:
        sys.exit(f"timing: cannot run {shlex.join(cmd)}: {e}")
    seconds = time.perf_counter() - start
    if p.returncode != 0:
        sys.stderr.write(f"timing: {shlex.join(cmd)} exited with {p.returncode}\n")
        sys.stderr.write("---- stdout (tail) ----\n" + tail(p.stdout) + "\n")
        sys.stderr.write("---- stderr (tail) ----\n" + tail(p.stderr) + "\n")
        sys.exit(1)
    return seconds, (p.stdout if capture else b"")


def with_perf_counter(args):
    for _ in range(args.warmup):
        remove(args.rm)
        run_once(args.cmd, args.timeout, False)
    times = []
    stdout = b""
    for _ in range(args.runs):
        remove(args.rm)
        seconds, out = run_once(args.cmd, args.timeout, args.capture)
        times.append(seconds)
        if args.capture:
            stdout = out
    return times, stdout


def with_hyperfine(args, hyperfine):
    with tempfile.TemporaryDirectory(prefix="bench-hyperfine.") as tmp:
        export = os.path.join(tmp, "result.json")
        hcmd = [hyperfine, "--style", "none", "--warmup", str(args.warmup), "--runs", str(args.runs),
                "--export-json", export]
        if args.rm:
            hcmd += ["--prepare", "rm -f " + shlex.quote(args.rm)]
        hcmd.append(shlex.join(args.cmd))
        try:
            p = subprocess.run(hcmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=args.timeout * (args.runs + args.warmup) + 30)
        except subprocess.TimeoutExpired:
            sys.exit(f"timing: hyperfine on {shlex.join(args.cmd)} did not finish in time")
        if p.returncode != 0:
            sys.stderr.write(f"timing: hyperfine exited with {p.returncode} on {shlex.join(args.cmd)}\n")
            sys.stderr.write(tail(p.stdout) + "\n" + tail(p.stderr) + "\n")
            sys.exit(1)
        with open(export) as f:
            times = [float(t) for t in json.load(f)["results"][0]["times"]]
    stdout = b""
    if args.capture:
        # hyperfine throws the output away: one more, untimed run for the printed result.
        remove(args.rm)
        _, stdout = run_once(args.cmd, args.timeout, True)
    return times, stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", required=True)
    ap.add_argument("--bytes", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rm")
    ap.add_argument("--capture", action="store_true")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    if args.cmd and args.cmd[0] == "--":
        args.cmd = args.cmd[1:]
    if not args.cmd:
        ap.error("no command given after --")
    if args.runs < 1 or args.warmup < 0 or args.bytes <= 0:
        ap.error("--runs must be >= 1, --warmup >= 0, --bytes > 0")

    hyperfine = None if os.environ.get("BENCH_NO_HYPERFINE") else shutil.which("hyperfine")
    if hyperfine:
        times, stdout = with_hyperfine(args, hyperfine)
        tool = "hyperfine"
    else:
        times, stdout = with_perf_counter(args)
        tool = "perf_counter"

    mbps = [args.bytes / 1e6 / t if t > 0 else float("inf") for t in times]
    result = {
        "label": args.label,
        "command": args.cmd,
        "bytes": args.bytes,
        "tool": tool,
        "warmup": args.warmup,
        "times_s": times,
        "median_s": statistics.median(times),
        "mbps": mbps,
        "median_mbps": statistics.median(mbps),
        "stdout": stdout.decode("utf-8", "replace")[:4096],
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    runs = " ".join(f"{t:.3f}" for t in times)
    print(f"    {args.label:<22} runs {runs} s  ->  median {result['median_mbps']:.1f} MB/s  ({tool})")


if __name__ == "__main__":
    main()
