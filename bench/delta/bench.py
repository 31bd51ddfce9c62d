#!/usr/bin/env python3
"""Runs every delta tool on every pair, in one run, and prints sizes, times, memory, ratios and goals.

    bench.py PAIRS_DIR WORK_DIR FLEETCTL [--decode-runs N] [--strict] [--json OUT]

For each pair: bsdiff/bspatch, xdelta3 -9, zstd -19 --long=31 --patch-from, and fleetctl delta
create/apply. Every tool runs under /usr/bin/time -v (wall time, "Maximum resident set size").
Each decode is run --decode-runs times (the fastest counts; memory is the largest seen) and its
output must have the target's sha256, or the run stops.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

SLACK = 4096  # bytes: "never larger than the best peer" allows this on tiny patches
GOAL_RATIO = {"1-last-layer": 0.85, "5-int8-finetune": 0.90, "2-full-finetune": 0.75}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def timed(cmd, log):
    """Runs cmd under /usr/bin/time -v; returns (seconds, max RSS bytes). Its standard output is
    kept in LOG.last-stdout, both streams are appended to LOG."""
    tfile = log + ".time"
    with open(log, "ab") as out, open(log + ".last-stdout", "wb") as so:
        out.write(("$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        r = subprocess.run(["/usr/bin/time", "-v", "-o", tfile] + cmd, stdout=so, stderr=out)
    with open(log, "ab") as out, open(log + ".last-stdout", "rb") as so:
        out.write(so.read())
    text = open(tfile).read()
    if r.returncode != 0:
        sys.exit(f"bench: failed ({r.returncode}): {' '.join(cmd)}\n{open(log).read()[-3000:]}")
    secs = rss = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Elapsed (wall clock) time"):
            v = line.split(": ", 1)[1]
            parts = [float(p) for p in v.split(":")]
            secs = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
        elif line.startswith("Maximum resident set size"):
            rss = int(line.split(": ", 1)[1]) * 1024
    return secs, rss


def tools(fleetctl):
    """name -> (encode argv, decode argv) builders."""
    return {
        "bsdiff": (lambda b, t, p: ["bsdiff", b, t, p],
                   lambda b, p, o: ["bspatch", b, o, p]),
        "xdelta3 -9": (lambda b, t, p: ["xdelta3", "-9", "-e", "-f", "-s", b, t, p],
                       lambda b, p, o: ["xdelta3", "-d", "-f", "-s", b, p, o]),
        "zstd -19 --long": (lambda b, t, p: ["zstd", "-q", "-f", "-19", "--long=31", f"--patch-from={b}", t, "-o", p],
                            lambda b, p, o: ["zstd", "-q", "-f", "-d", "--long=31", f"--patch-from={b}", p, "-o", o]),
        "edgefleet": (lambda b, t, p: [fleetctl, "delta", "create", "--base", b, "--target", t, "--out", p, "--json"],
                      lambda b, p, o: [fleetctl, "delta", "apply", "--base", b, "--patch", p, "--out", o, "--no-sync"]),
    }


def mb(n):
    return f"{n / 1e6:.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pairs")
    ap.add_argument("work")
    ap.add_argument("fleetctl")
    ap.add_argument("--decode-runs", type=int, default=3)
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    pairs = json.load(open(os.path.join(args.pairs, "pairs.json")))
    os.makedirs(args.work, exist_ok=True)
    log = os.path.join(args.work, "tools.log")
    results = []
    for pair in pairs:
        d = os.path.join(args.pairs, pair["name"])
        base, target = os.path.join(d, "base.safetensors"), os.path.join(d, "target.safetensors")
        want = sha256(target)
        row = {"pair": pair["name"], "what": pair["what"], "target_size": os.path.getsize(target),
               "largest_tensor": pair["largest_tensor"], "tools": {}}
        print(f"== {pair['name']}: {pair['what']}", file=sys.stderr)
        for name, (enc, dec) in tools(args.fleetctl).items():
            slug = name.split()[0]
            patch = os.path.join(args.work, f"{pair['name']}.{slug}.patch")
            out = os.path.join(args.work, f"{pair['name']}.{slug}.out")
            esec, erss = timed(enc(base, target, patch), log)
            if name == "edgefleet":
                rep = json.loads(open(log + ".last-stdout").read())
                row["edgefleet_method"] = rep["method"]
                row["edgefleet_methods"] = {m["method"]: m.get("size") for m in rep["methods"]}
            dsecs, drss = [], 0
            for _ in range(args.decode_runs):
                if os.path.exists(out):
                    os.unlink(out)
                s, r = timed(dec(base, patch, out), log)
                dsecs.append(s)
                drss = max(drss, r)
                got = sha256(out)
                if got != want:
                    sys.exit(f"bench: {name} decoded {pair['name']} to sha256 {got}, the target is {want}")
            os.unlink(out)
            row["tools"][name] = {"size": os.path.getsize(patch), "encode_s": esec, "encode_rss": erss,
                                  "decode_s": min(dsecs), "decode_runs": dsecs, "decode_rss": drss}
            print(f"   {name:16s} {os.path.getsize(patch):>11,d} B  enc {esec:7.2f} s  dec {min(dsecs):6.2f} s  "
                  f"rss enc {mb(erss)} MB dec {mb(drss)} MB", file=sys.stderr)
        results.append(row)
    report(results, args)


def report(results, args):
    peers = ["bsdiff", "xdelta3 -9", "zstd -19 --long"]
    names = peers + ["edgefleet"]
    print()
    print("Patch size (bytes) and EdgeFleet / best peer")
    hdr = f"{'pair':18s}" + "".join(f"{n:>17s}" for n in names) + f"{'best peer':>17s}{'ratio':>8s}{'goal':>8s}  verdict"
    print(hdr)
    misses = []
    for r in results:
        t = r["tools"]
        best_name = min(peers, key=lambda n: t[n]["size"])
        best = t[best_name]["size"]
        ef = t["edgefleet"]["size"]
        ratio = ef / best if best else float("inf")
        goal = GOAL_RATIO.get(r["pair"])
        ok = ef <= best + SLACK and (goal is None or ratio <= goal)
        if not ok:
            misses.append(f"{r['pair']}: size ratio {ratio:.3f}" + (f" > {goal}" if goal else " (larger than the best peer)"))
        print(f"{r['pair']:18s}" + "".join(f"{t[n]['size']:>17,d}" for n in names)
              + f"{best_name:>17s}{ratio:>8.3f}{(f'<={goal}' if goal else '<=best'):>8s}  {'ok' if ok else 'MISSED'}"
              + f"  (kept {r.get('edgefleet_method', '?')})")
    print()
    print("Encode time (s); EdgeFleet speed-up over bsdiff (goal >= 5x)")
    print(f"{'pair':18s}" + "".join(f"{n:>17s}" for n in names) + f"{'vs bsdiff':>11s}  verdict")
    for r in results:
        t = r["tools"]
        sp = t["bsdiff"]["encode_s"] / max(t["edgefleet"]["encode_s"], 1e-9)
        ok = sp >= 5
        if not ok:
            misses.append(f"{r['pair']}: encode only {sp:.1f}x faster than bsdiff")
        print(f"{r['pair']:18s}" + "".join(f"{t[n]['encode_s']:>17.2f}" for n in names) + f"{sp:>10.1f}x  {'ok' if ok else 'MISSED'}")
    print()
    print(f"Decode time (s, fastest of {args.decode_runs}); EdgeFleet / zstd --patch-from (goal <= 2x)")
    print(f"{'pair':18s}" + "".join(f"{n:>17s}" for n in names) + f"{'vs zstd':>11s}  verdict")
    for r in results:
        t = r["tools"]
        q = t["edgefleet"]["decode_s"] / max(t["zstd -19 --long"]["decode_s"], 1e-9)
        ok = q <= 2
        if not ok:
            misses.append(f"{r['pair']}: decode {q:.2f}x the time of zstd --patch-from")
        print(f"{r['pair']:18s}" + "".join(f"{t[n]['decode_s']:>17.2f}" for n in names) + f"{q:>10.2f}x  {'ok' if ok else 'MISSED'}")
    print()
    print("Peak memory, MB (max RSS): encode / decode; EdgeFleet decode goal < largest tensor + 64 MB")
    print(f"{'pair':18s}" + "".join(f"{n:>17s}" for n in names) + f"{'goal':>9s}  verdict")
    for r in results:
        t = r["tools"]
        limit = r["largest_tensor"] + 64e6
        ok = t["edgefleet"]["decode_rss"] < limit
        if not ok:
            misses.append(f"{r['pair']}: decode RSS {mb(t['edgefleet']['decode_rss'])} MB >= {mb(limit)} MB")
        print(f"{r['pair']:18s}" + "".join(f"{mb(t[n]['encode_rss']) + ' / ' + mb(t[n]['decode_rss']):>17s}" for n in names)
              + f"{mb(limit):>9s}  {'ok' if ok else 'MISSED'}")
    print()
    if misses:
        print(f"Goals missed ({len(misses)}):")
        for m in misses:
            print("  - " + m)
    else:
        print("All goals met.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "missed": misses}, f, indent=1)
    if args.strict and misses:
        sys.exit(3)


if __name__ == "__main__":
    main()
