#!/usr/bin/env python3
"""Own (exclusive) instructions per message by function, from two callgrind
profiles of the same server that differ only in how many messages it echoed:
(I_fn(N2) - I_fn(N1)) / (N2 - N1), largest first.

    callgrind_per_message.py FEW.cg MANY.cg MESSAGES_BETWEEN
"""
import re
import subprocess
import sys

LINE = re.compile(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*)$")


def own_costs(path):
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--inclusive=no", "--tree=none", "--auto=no", path],
        capture_output=True, text=True, check=True,
    ).stdout
    costs = {}
    for line in out.splitlines():
        match = LINE.match(line)
        if not match or "=>" in line or "PROGRAM TOTALS" in line:
            continue
        name = match.group(2).split(" [")[0]
        if name.startswith("(") or name.startswith("events"):
            continue
        name = re.sub(r"^.*/(src|sysdeps)/", "", name)
        costs[name] = costs.get(name, 0) + int(match.group(1).replace(",", ""))
    return costs


def main():
    few, many, messages = sys.argv[1], sys.argv[2], int(sys.argv[3])
    a, b = own_costs(few), own_costs(many)
    rows = sorted(((b.get(k, 0) - a.get(k, 0)) / messages, k) for k in set(a) | set(b))
    try:
        for per, name in reversed(rows):
            if abs(per) >= 20:
                print(f"{per:10.0f}  {name[:140]}")
    except BrokenPipeError:
        pass


if __name__ == "__main__":
    main()
