#!/usr/bin/env python3
"""Print the benchmark summary table from the JSON results bench/run.sh collected.

    report.py RESULTS_DIR [--strict]

--strict  exit 3 when a goal is missed (the default only reports it).

MB = 10^6 bytes everywhere (throughput, sizes, memory). Standard library only.
"""

import argparse
import json
import os
import sys

GOAL_BINARY_MB = 25
GOAL_RSS_IDLE_MB = 20
GOAL_RSS_INSTALL_MB = 64


def load(d, name):
    try:
        with open(os.path.join(d, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def mb(nbytes):
    return nbytes / 1e6


def fmt_rate(r):
    return f"{r['median_mbps']:.1f}" if r else "n/a"


def ratio(a, b):
    if not a or not b or not b.get("median_mbps"):
        return "n/a"
    return f"{a['median_mbps'] / b['median_mbps']:.2f}x"


def verdict(ok):
    return "ok" if ok else "MISSED"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dir")
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args()
    d = args.dir

    va, vp = load(d, "verify_agent.json"), load(d, "verify_sha256sum.json")
    da, dp = load(d, "download_agent.json"), load(d, "download_curl.json")
    dpf = load(d, "download_curl_fsync.json")
    swap, swapmeta = load(d, "swap.json"), load(d, "swap_meta.json")
    elf = load(d, "elf.json")
    idle, inst_sample, inst_status = load(d, "mem_idle.json"), load(d, "mem_install_sample.json"), load(d, "mem_install_status.json")
    after = load(d, "mem_after_install.json")
    meta = load(d, "meta.json") or {}

    missed = []
    rows = []
    rows.append(("verify throughput (MB/s)", fmt_rate(va), f"sha256sum {fmt_rate(vp)}", ratio(va, vp), ""))
    rows.append(("download throughput (MB/s)", fmt_rate(da), f"curl {fmt_rate(dp)}", ratio(da, dp), ""))

    if swap:
        ok = swap["failed"] == 0 and not swap.get("still_failing_at_end")
        if not ok:
            missed.append("swap")
        rows.append(("swap: failed reads / longest gap", f"{swap['failed']} / {swap['longest_gap_ms']:.0f} ms", "", "",
                     f"none ({verdict(ok)})"))
    else:
        rows.append(("swap: failed reads / longest gap", "n/a", "", "", "none"))

    if elf:
        size = mb(elf["size_bytes"])
        ok = size < GOAL_BINARY_MB
        if not ok:
            missed.append("binary size")
        rows.append(("agent binary size", f"{size:.1f} MB", "", "", f"< {GOAL_BINARY_MB} MB ({verdict(ok)})"))
    else:
        rows.append(("agent binary size", "n/a", "", "", f"< {GOAL_BINARY_MB} MB"))

    peak = None
    if inst_status or inst_sample:
        peak = max((inst_status or {}).get("VmHWM_bytes", 0), (inst_sample or {}).get("max_VmRSS_bytes", 0),
                   (inst_sample or {}).get("last_VmHWM_bytes", 0))
    if idle and peak is not None:
        idle_mb, peak_mb = mb(idle["VmRSS_bytes"]), mb(peak)
        ok = idle_mb < GOAL_RSS_IDLE_MB and peak_mb < GOAL_RSS_INSTALL_MB
        if idle_mb >= GOAL_RSS_IDLE_MB:
            missed.append("idle RSS")
        if peak_mb >= GOAL_RSS_INSTALL_MB:
            missed.append("installing RSS")
        rows.append(("agent RSS idle / installing", f"{idle_mb:.1f} MB / {peak_mb:.1f} MB", "", "",
                     f"< {GOAL_RSS_IDLE_MB} / < {GOAL_RSS_INSTALL_MB} MB ({verdict(ok)})"))
    else:
        rows.append(("agent RSS idle / installing", "n/a", "", "", f"< {GOAL_RSS_IDLE_MB} / < {GOAL_RSS_INSTALL_MB} MB"))

    widths = [34, 20, 22, 8]
    header = ("metric", "edgefleet", "peer", "ratio", "goal")
    print("".join(h.ljust(w) for h, w in zip(header, widths)) + header[-1])
    for r in rows:
        print("".join(c.ljust(w) for c, w in zip(r, widths)) + r[-1])

    notes = []
    if meta.get("bin"):
        notes.append(f"binaries: {meta['bin']}" + (" (a debug build: the numbers mean little)" if meta.get("debug_build") else ""))
    if va and vp:
        notes.append(f"verify: {mb(va['bytes']):.0f} MB file, {len(va['times_s'])} runs after {va['warmup']} warm-up, "
                     f"median; timed with {va['tool']}; both printed the same sha256")
    if da and dp:
        notes.append(f"download: {mb(da['bytes']):.0f} MB artifact over loopback, {len(da['times_s'])} runs after "
                     f"{da['warmup']} warm-up; both files hash to the artifact sha256")
    if dpf and da:
        notes.append(f"  fleet-agent fetch fsyncs the file at the end, curl does not; curl + sync FILE: "
                     f"{fmt_rate(dpf)} MB/s (agent/that = {ratio(da, dpf)})")
    if swap:
        seen = ", ".join(f"{k} {v}" for k, v in swap["seen"].items())
        notes.append(f"swap: {swap['reads']} reads in {swap['duration_s']:.1f} s ({seen}); "
                     f"longest time between two complete reads {swap['longest_between_ok_ms']:.1f} ms "
                     f"(the reader's resolution); went back to an older model {swap['went_back']} times")
        if swap["failed"]:
            reasons = "; ".join(f"{k}: {v}" for k, v in swap["failures_by_reason"].items())
            notes.append(f"  failed reads by reason: {reasons}")
    if swapmeta:
        notes.append(f"swap: rollout start -> current at v2 took {swapmeta['install_seconds']:.1f} s "
                     f"({mb(swapmeta['v2_bytes']):.1f} MB model)")
    if elf and elf.get("parsed"):
        built = meta.get("make_agent_build")
        notes.append(f"agent binary: {'stripped' if elf['stripped'] else 'not stripped'}, "
                     f"Swift runtime {'static' if not elf['swift_runtime_libs'] else 'shared (' + ', '.join(elf['swift_runtime_libs']) + ')'}; "
                     f"{'looks like a `make agent` build' if built else 'NOT a `make agent` build'}")
        notes.append(f"  needs: {', '.join(elf['needed'])}")
    if idle:
        notes.append(f"RSS idle: VmRSS {mb(idle['VmRSS_bytes']):.1f} MB (anonymous {mb(idle.get('RssAnon', 0) * 1024):.1f} MB, "
                     f"file-backed {mb(idle.get('RssFile', 0) * 1024):.1f} MB), VmHWM {mb(idle['VmHWM_bytes']):.1f} MB "
                     f"(after {meta.get('idle_seconds', '?')} s of 1 s polls with nothing to do)")
    if inst_sample or inst_status:
        how = "VmHWM reset before the v2 rollout" if meta.get("hwm_reset") else \
            "VmHWM could not be reset, so it covers the whole life of the agent (v1 install included)"
        notes.append(f"RSS installing: max sampled VmRSS {mb((inst_sample or {}).get('max_VmRSS_bytes', 0)):.1f} MB "
                     f"({(inst_sample or {}).get('samples', 0)} samples), VmHWM {mb((inst_status or {}).get('VmHWM_bytes', 0)):.1f} MB; {how}")
    if after:
        notes.append(f"RSS idle after the installs: VmRSS {mb(after['VmRSS_bytes']):.1f} MB")
    if notes:
        print()
        for n in notes:
            print(n)
    if missed:
        print()
        print("goals missed: " + ", ".join(missed))
        if args.strict:
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
