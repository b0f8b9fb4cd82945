"""Goals: ratios measured side by side in this run, judged against their bounds."""

from fastopt.bench.overhead import FIRST_CALL_ELEMENTS

FIRST_CALL_TOLERANCE = 1.5  # "the first call is as fast as the hundredth", within this factor


def _target(description, measured, op, bound, unit=""):
    ok = measured >= bound if op == ">=" else measured <= bound
    # how far from the bound, as a share of it
    missed = (1 - measured / bound) if op == ">=" else (measured / bound - 1)
    return {"target": description, "measured": measured, "op": op, "bound": bound, "unit": unit,
            "ok": ok, "missed_by_pct": None if ok else 100 * missed}


def evaluate_targets(rows, overhead=None):
    """The targets of the issue that this run's data can judge."""
    targets = []
    for r in rows:
        if r["implementation"] != "fastopt":
            continue
        where = f"{r['optimizer']} {r['dtype']} {r['workload']} @{r['threads']}t"
        pct, over = r.get("pct_of_ceiling"), r.get("speedup_over", {})

        def vs(peer, bound):
            if peer in over:
                targets.append(_target(f"{where}: speedup over {peer}", over[peer], ">=", bound, "x"))

        if (r["optimizer"], r["dtype"]) == ("adam", "float32"):
            if r["workload"] == "1e7":
                if pct is not None:
                    targets.append(_target(f"{where}: % of traffic ceiling", pct, ">=", 95.0, "%"))
                vs("numba", 1.0)
            elif r["workload"] == "1e5":
                vs("torch-fused", 3.0)
                vs("numba", 1.0)
            elif r["workload"] == "mnist-mlp":
                vs("torch-fused", 2.5)
            elif r["workload"] == "gpt2-small":
                vs("torch-fused", 1.05)
                if r["threads"] >= 16 and pct is not None:
                    targets.append(_target(f"{where}: % of traffic ceiling", pct, ">=", 95.0, "%"))
        elif r["workload"] == "1e7" and pct is not None:
            targets.append(_target(f"{where}: % of traffic ceiling", pct, ">=", 90.0, "%"))
    if overhead:
        targets += [
            _target("16-element Adam step", overhead["adam16_us"], "<=", 1.0, "us"),
            _target("extra time per tensor in a list call", overhead["per_tensor_us"], "<=", 0.2, "us"),
            _target("import fastopt (numpy already imported)", overhead["import_ms"], "<=", 50.0, "ms"),
            _target(f"first call / median of next 100 ({FIRST_CALL_ELEMENTS:.0e} elements, "
                    f"{overhead['first_call_threads']} threads)",
                    overhead["first_call_ratio"], "<=", FIRST_CALL_TOLERANCE, "x"),
        ]
    return targets



def format_targets(targets):
    if not targets:
        return "Targets: none of the issue's targets applies to what was measured."
    lines = ["Targets of the issue (medians, ratios side by side in this run):"]
    for t in targets:
        status = "ok    " if t["ok"] else "MISSED"
        detail = "" if t["ok"] else f"  missed by {t['missed_by_pct']:.1f}%"
        lines.append(f"  {status} {t['target']}: {t['measured']:.3g}{t['unit']} "
                     f"(needs {t['op']} {t['bound']:g}{t['unit']}){detail}")
    missed = sum(not t["ok"] for t in targets)
    lines.append(f"  {len(targets) - missed} of {len(targets)} met.")
    return "\n".join(lines)

