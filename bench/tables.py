"""The Markdown tables of bench/README.md, from the JSON that ``python -m fastopt bench --json`` writes.

    python -m fastopt bench --repeat 9 --json default.json
    python -m fastopt bench --optimizer all --workload 1e7 --no-overhead --json rules.json
    python -m fastopt bench --workload gpt2-small --repeat 5 --no-overhead --json gpt2.json
    python bench/tables.py default.json rules.json gpt2.json
"""

import json
import sys

PEERS = ["numpy", "torch-forloop", "torch-foreach", "torch-fused", "numba"]


def _fmt(x, digits=3):
    if x is None:
        return "-"
    return f"{x:.{digits}g}"


def _fastopt_rows(results):
    return [r for r in results if r["implementation"] == "fastopt"]


def peers_table(results):
    head = ("| rule | dtype | workload | threads | fastopt ms/step | ns/param | % of ceiling | "
            + " | ".join(f"× {p}" for p in PEERS) + " |")
    lines = [head, "|" + "---|" * (7 + len(PEERS))]
    for r in _fastopt_rows(results):
        speedups = r.get("speedup_over", {})
        lines.append(f"| {r['optimizer']} | {r['dtype']} | {r['workload']} | {r['threads']} | "
                     f"{_fmt(r['ms_per_step'])} | {_fmt(r['ns_per_param'])} | "
                     f"{_fmt(r.get('pct_of_ceiling'))} | "
                     + " | ".join(_fmt(speedups.get(p)) for p in PEERS) + " |")
    return "\n".join(lines)


def _bound(verdicts, name):
    """The goal's name and bound, from the run's verdicts ("" when the run did not judge it)."""
    v = next((v for v in verdicts if v["goal"] == name), None)
    if v is None:
        return ""
    unit = {"x": "×", "us": " µs", "ms": " ms", "%": "%"}.get(v["unit"], v["unit"])
    return f"`{name}`: {'≥' if v['op'] == '>=' else '≤'} {v['bound']:g}{unit}"


def overhead_table(overhead, verdicts):
    if not overhead:
        return ""
    o = overhead
    rows = [
        ("16-element Adam step, one array", f"{o['adam16_us']:.2f} µs", _bound(verdicts, "adam-16-step")),
        ("extra time per tensor in a list call (148 vs 1 tensor of 16)", f"{o['per_tensor_us']:.2f} µs",
         _bound(verdicts, "list-per-tensor")),
        ("`import fastopt`, numpy already imported",
         f"{o['import_ms']:.1f} ms (numpy itself: {o['import_numpy_ms']:.0f} ms)", _bound(verdicts, "import-time")),
        (f"first call of a process, 1e5 elements, {o['first_call_threads']} "
         f"thread{'s' if o['first_call_threads'] > 1 else ''}",
         f"{o['first_call_us']:.0f} µs, {o['first_call_ratio']:.2f}× the next 100 ({o['later_call_us']:.0f} µs)",
         _bound(verdicts, "first-parallel-call")),
        ("the same on 1 thread", f"{o['first_call_1thread_us']:.0f} µs, {o['first_call_ratio_1thread']:.2f}× "
         f"the next 100 ({o['later_call_1thread_us']:.0f} µs)", ""),
    ]
    lines = ["| figure | measured | goal |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def goals_table(verdicts):
    """Every goal the run judged, met or missed (see docs/benchmarks.md)."""
    if not verdicts:
        return ""
    lines = ["| goal | where | measured | bound | met |", "|---|---|---|---|---|"]
    for v in verdicts:
        lines.append(f"| `{v['goal']}` | {v['where']} | {_fmt(v['measured'])}{v['unit']} | "
                     f"{v['op']} {v['bound']:g}{v['unit']} | {'yes' if v['met'] else 'no'} |")
    return "\n".join(lines)


def main(paths):
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        print(f"<!-- {path}: {' '.join(data.get('argv', []))} ({data.get('elapsed_s', 0):.0f} s) -->")
        print(peers_table(data["results"]))
        print()
        verdicts = data.get("goals", [])
        for table in (overhead_table(data.get("overhead"), verdicts), goals_table(verdicts)):
            if table:
                print(table)
                print()


if __name__ == "__main__":
    main(sys.argv[1:] or sys.exit(__doc__))
