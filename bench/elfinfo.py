#!/usr/bin/env python3
"""What an ELF executable carries: its size, whether it is stripped, the libraries it needs.

    elfinfo.py FILE [--out RESULT.json]

stripped     no .symtab section (what `strip` / `-Xlinker -s` removes)
debug_info   has .debug_* sections
needed       DT_NEEDED entries of the dynamic section (the libraries it links directly)
swift_libs   the needed libraries named libswift*.so* (none when the Swift stdlib is static)
swift_runtime_libs   swift_libs plus the other libraries of the Swift toolchain that
             --static-swift-stdlib links in (Foundation, libdispatch, BlocksRuntime)

64-bit little-endian ELF only (x86_64, aarch64); anything else is reported as not parsed.
Standard library only.
"""

import argparse
import json
import os
import struct
import sys

SWIFT_RUNTIME_PREFIXES = ("libswift", "libFoundation", "lib_Foundation", "libdispatch", "libBlocksRuntime")


def parse(path):
    with open(path, "rb") as f:
        data = f.read()
    info = {"path": path, "size_bytes": len(data), "parsed": False}
    if data[:4] != b"\x7fELF":
        info["error"] = "not an ELF file"
        return info
    if data[4] != 2 or data[5] != 1:
        info["error"] = "not a 64-bit little-endian ELF file"
        return info
    e_shoff, = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = []
    for i in range(e_shnum):
        off = e_shoff + i * e_shentsize
        name, stype, flags, addr, offset, size, link, sinfo, align, entsize = struct.unpack_from("<IIQQQQIIQQ", data, off)
        sections.append({"name_off": name, "type": stype, "offset": offset, "size": size, "link": link})
    if not sections or e_shstrndx >= len(sections):
        info["error"] = "no section headers"
        return info
    strtab = sections[e_shstrndx]

    def cstr(table_off, off):
        end = data.index(b"\0", table_off + off)
        return data[table_off + off:end].decode("utf-8", "replace")

    for s in sections:
        s["name"] = cstr(strtab["offset"], s["name_off"])
    names = [s["name"] for s in sections]
    needed = []
    for s in sections:
        if s["name"] != ".dynamic":
            continue
        dynstr = sections[s["link"]]
        for off in range(s["offset"], s["offset"] + s["size"], 16):
            tag, val = struct.unpack_from("<qQ", data, off)
            if tag == 0:
                break
            if tag == 1:   # DT_NEEDED
                needed.append(cstr(dynstr["offset"], val))
    info.update({
        "parsed": True,
        "stripped": ".symtab" not in names,
        "debug_info": any(n.startswith(".debug_") for n in names),
        "needed": needed,
        "swift_libs": [n for n in needed if n.startswith("libswift")],
        "swift_runtime_libs": [n for n in needed if n.startswith(SWIFT_RUNTIME_PREFIXES)],
        "static_binary": ".dynamic" not in names,
    })
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--out")
    args = ap.parse_args()
    if not os.path.isfile(args.file):
        sys.exit(f"elfinfo: {args.file} is not a file")
    info = parse(args.file)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(info, f, indent=2)
    if not info["parsed"]:
        print(f"    {args.file}: {info.get('error')}")
        return 0
    print(f"    size {info['size_bytes']} bytes ({info['size_bytes'] / 1e6:.1f} MB), "
          f"{'stripped' if info['stripped'] else 'NOT stripped (has .symtab)'}"
          f"{', with debug info' if info['debug_info'] else ''}")
    print(f"    needs (DT_NEEDED): {', '.join(info['needed']) or '(nothing: static)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
