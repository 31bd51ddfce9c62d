#!/usr/bin/env python3
"""Resident memory of a running process, from /proc/PID/status.

    procmem.py status PID [--out RESULT.json]   VmRSS and VmHWM now
    procmem.py reset-hwm PID                    reset VmHWM to the current VmRSS
                                                (writes 5 to /proc/PID/clear_refs; Linux >= 4.0)
    procmem.py sample PID --out RESULT.json [--interval 0.02]
                                                sample VmRSS until SIGTERM/SIGINT or until the
                                                process exits; then write the largest sample, the
                                                last VmHWM and the number of samples
    procmem.py mappings PID [--top N] [--out RESULT.json]
                                                RSS per mapped file (from /proc/PID/smaps): resident,
                                                anonymous (written copies, e.g. relocated data) and
                                                file-backed kB of the binary and each library
    procmem.py faults PID                       minor and major page faults so far (/proc/PID/stat)

Values are in kB as the kernel prints them (1 kB = 1024 bytes); the JSON also carries bytes.
Standard library only.
"""

import argparse
import json
import signal
import sys
import time

FIELDS = ("VmRSS", "VmHWM", "VmSize", "VmPeak", "RssAnon", "RssFile", "Threads")


def read_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in FIELDS:
                parts = value.split()
                out[key] = int(parts[0]) if parts else 0
    return out


def status(args):
    try:
        s = read_status(args.pid)
    except OSError as e:
        sys.exit(f"procmem: cannot read /proc/{args.pid}/status: {e}")
    s["VmRSS_bytes"] = s.get("VmRSS", 0) * 1024
    s["VmHWM_bytes"] = s.get("VmHWM", 0) * 1024
    s["pid"] = args.pid
    s["time"] = time.time()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(s, f, indent=2)
    print(f"    pid {args.pid}: VmRSS {s['VmRSS_bytes'] / 1e6:.1f} MB (anonymous {s.get('RssAnon', 0) * 1024 / 1e6:.1f} MB, "
          f"file-backed {s.get('RssFile', 0) * 1024 / 1e6:.1f} MB), VmHWM {s['VmHWM_bytes'] / 1e6:.1f} MB, "
          f"threads {s.get('Threads', '?')}")


def reset_hwm(args):
    try:
        with open(f"/proc/{args.pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError as e:
        print(f"unsupported ({e})")
        return 1
    print("reset")
    return 0


def sample(args):
    stop = False

    def on_signal(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    max_rss = 0
    max_rss_at = None
    last_hwm = 0
    n = 0
    exited = False
    t0 = time.monotonic()
    while not stop:
        try:
            s = read_status(args.pid)
        except OSError:
            exited = True
            break
        n += 1
        rss = s.get("VmRSS", 0)
        if rss > max_rss:
            max_rss = rss
            max_rss_at = time.monotonic() - t0
        last_hwm = max(last_hwm, s.get("VmHWM", 0))
        time.sleep(args.interval)
    result = {
        "pid": args.pid,
        "samples": n,
        "interval_s": args.interval,
        "duration_s": time.monotonic() - t0,
        "max_VmRSS": max_rss,
        "max_VmRSS_bytes": max_rss * 1024,
        "max_VmRSS_at_s": max_rss_at,
        "last_VmHWM": last_hwm,
        "last_VmHWM_bytes": last_hwm * 1024,
        "process_exited": exited,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


def read_mappings(pid):
    """kB per mapped object: {name: {"Rss": .., "Anonymous": .., "Size": ..}}; [anon], [heap], [stack] as such."""
    out = {}
    name = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if not parts[0].endswith(":") and "-" in parts[0]:
                name = " ".join(parts[5:]) if len(parts) > 5 else "[anon]"
                out.setdefault(name, {"Rss": 0, "Anonymous": 0, "Size": 0})
            elif name is not None and parts[0][:-1] in ("Rss", "Anonymous", "Size"):
                out[name][parts[0][:-1]] += int(parts[1])
    return out


def mappings(args):
    try:
        m = read_mappings(args.pid)
    except OSError as e:
        sys.exit(f"procmem: cannot read /proc/{args.pid}/smaps: {e}")
    rows = sorted(m.items(), key=lambda kv: -kv[1]["Rss"])
    total = {k: sum(v[k] for v in m.values()) for k in ("Rss", "Anonymous")}
    print(f"    pid {args.pid}: {total['Rss']} kB resident, {total['Anonymous']} kB anonymous, "
          f"{total['Rss'] - total['Anonymous']} kB file-backed")
    for name, v in rows[: args.top]:
        print(f"    {v['Rss']:8d} kB  (anonymous {v['Anonymous']:6d}, file {v['Rss'] - v['Anonymous']:6d})  {name}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"pid": args.pid, "total_kB": total, "mappings_kB": m}, f, indent=2)


def faults(args):
    try:
        with open(f"/proc/{args.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError as e:
        sys.exit(f"procmem: cannot read /proc/{args.pid}/stat: {e}")
    # After the command name: field 3 is state; minflt is field 10, majflt field 12.
    print(f"minflt {fields[7]} majflt {fields[9]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("status")
    p.add_argument("pid", type=int)
    p.add_argument("--out")
    p = sub.add_parser("reset-hwm")
    p.add_argument("pid", type=int)
    p = sub.add_parser("sample")
    p.add_argument("pid", type=int)
    p.add_argument("--out", required=True)
    p.add_argument("--interval", type=float, default=0.02)
    p = sub.add_parser("mappings")
    p.add_argument("pid", type=int)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--out")
    p = sub.add_parser("faults")
    p.add_argument("pid", type=int)
    args = ap.parse_args()
    return {"status": status, "reset-hwm": reset_hwm, "sample": sample, "mappings": mappings, "faults": faults}[args.what](args) or 0


if __name__ == "__main__":
    sys.exit(main())
