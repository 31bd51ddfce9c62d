#!/usr/bin/env python3
"""Read a model path in a tight loop and check that every read finds one complete model.

    swapreader.py --path MODELS/NAME/current/FILE --variant v1=SOURCE1 --variant v2=SOURCE2
                  --out RESULT.json [--ready READY_FILE] [--max-seconds 900]

Each read opens the path, takes the size with fstat, and reads the first and the last 4 KiB. A
read is complete when size, head and tail all equal those of one of the variants (computed from
the source files up front). Anything else (ENOENT, a short file, bytes of neither) is a failed
read. The reader runs until SIGTERM/SIGINT (or --max-seconds), then writes RESULT.json:

  reads, ok, failed               counts
  failures_by_reason              e.g. {"FileNotFoundError": 3, "size matches no variant": 1}
  first_failures                  up to 50 of them, with the time since the start
  longest_gap_ms                  the longest stretch with no complete model: from the end of the
                                  last complete read before a run of failures to the start of the
                                  next complete read (0 when no read failed)
  longest_between_ok_ms           the longest time between two consecutive complete reads, failed
                                  or not: the loop's resolution (the reader shares 2 cores with
                                  the agent, so the scheduler can stall it)
  seen                            complete reads of each variant
  first_seen_s / last_seen_s      when each variant was first/last read, since the start
  went_back                       complete reads of an earlier variant after a later one was read

--ready is created after the first complete read, so a caller knows the loop is running.
Standard library only.
"""

import argparse
import json
import os
import signal
import sys
import time

EDGE = 4096


def fingerprint(path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(EDGE)
        f.seek(max(0, size - EDGE))
        tail = f.read(EDGE)
    return size, head, tail


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", required=True)
    ap.add_argument("--variant", action="append", required=True, help="NAME=SOURCE_FILE, oldest first")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ready")
    ap.add_argument("--max-seconds", type=float, default=900)
    args = ap.parse_args()

    variants = []   # (name, size, head, tail), oldest first
    for item in args.variant:
        name, _, src = item.partition("=")
        if not src:
            ap.error(f"--variant {item!r} is not NAME=FILE")
        variants.append((name, *fingerprint(src)))
    by_size = {}
    for i, (name, size, head, tail) in enumerate(variants):
        by_size.setdefault(size, []).append(i)

    stop = False

    def on_signal(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    path = args.path
    clock = time.perf_counter
    t_start = clock()
    deadline = t_start + args.max_seconds

    reads = ok = failed = 0
    reasons = {}
    first_failures = []
    seen = [0] * len(variants)
    first_seen = [None] * len(variants)
    last_seen = [None] * len(variants)
    newest_seen = -1
    went_back = 0
    last_ok_end = None       # end of the most recent complete read
    gap_start = None         # set while in a run of failed reads
    longest_gap = 0.0
    longest_between_ok = 0.0
    ready_written = args.ready is None

    o_rdonly = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    while not stop:
        t0 = clock()
        if t0 > deadline:
            break
        reason = None
        detail = None
        match = -1
        try:
            fd = os.open(path, o_rdonly)
            try:
                size = os.fstat(fd).st_size
                candidates = by_size.get(size)
                if not candidates:
                    reason = "size matches no variant"
                    detail = f"size {size}"
                else:
                    head = os.pread(fd, EDGE, 0)
                    tail = os.pread(fd, EDGE, max(0, size - EDGE))
                    for i in candidates:
                        if variants[i][2] == head and variants[i][3] == tail:
                            match = i
                            break
                    if match < 0:
                        reason = "head/tail bytes match no variant"
            finally:
                os.close(fd)
        except OSError as e:
            reason = type(e).__name__ + (f" (errno {e.errno})" if not isinstance(e, FileNotFoundError) else "")
        t1 = clock()
        reads += 1
        if match >= 0:
            ok += 1
            seen[match] += 1
            rel = t1 - t_start
            if first_seen[match] is None:
                first_seen[match] = rel
            last_seen[match] = rel
            if match < newest_seen:
                went_back += 1
            newest_seen = max(newest_seen, match)
            if gap_start is not None:
                longest_gap = max(longest_gap, t0 - gap_start)
                gap_start = None
            if last_ok_end is not None:
                longest_between_ok = max(longest_between_ok, t1 - last_ok_end)
            last_ok_end = t1
            if not ready_written:
                with open(args.ready, "w") as f:
                    f.write("ready\n")
                ready_written = True
        else:
            failed += 1
            reasons[reason] = reasons.get(reason, 0) + 1
            if len(first_failures) < 50:
                first_failures.append({"t_s": round(t0 - t_start, 6), "reason": reason, "detail": detail})
            if gap_start is None:
                gap_start = last_ok_end if last_ok_end is not None else t0

    t_end = clock()
    still_failing = gap_start is not None
    if still_failing:
        longest_gap = max(longest_gap, t_end - gap_start)

    result = {
        "path": path,
        "duration_s": t_end - t_start,
        "reads": reads,
        "ok": ok,
        "failed": failed,
        "failures_by_reason": reasons,
        "first_failures": first_failures,
        "longest_gap_ms": longest_gap * 1000,
        "still_failing_at_end": still_failing,
        "longest_between_ok_ms": longest_between_ok * 1000,
        "seen": {v[0]: seen[i] for i, v in enumerate(variants)},
        "first_seen_s": {v[0]: first_seen[i] for i, v in enumerate(variants)},
        "last_seen_s": {v[0]: last_seen[i] for i, v in enumerate(variants)},
        "went_back": went_back,
        "stopped_by": "signal" if stop else "max-seconds",
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
