"""The goals fastopt's speed is judged by, and how one run's figures meet them.

A goal has a short stable name, what it means and why, a bound, and how a
run judges it: which of the run's rows or figures it compares.  A run judges
only the goals that its measurements reach, once per place measured (rule,
precision mode, workload, thread count).  docs/benchmarks.md documents every
goal with a command that measures it.
"""

from collections.abc import Callable
from dataclasses import dataclass

from fastopt.bench.overhead import FIRST_CALL_ELEMENTS, OVERHEAD_TENSORS
from fastopt.bench.report import ratio
from fastopt.bench.rules import RULES
from fastopt.bench.workloads import DTYPES


@dataclass(frozen=True)
class Goal:
    name: str
    op: str             # ">=": the figure must be at least the bound; "<=": at most
    bound: float
    unit: str           # of the figure and the bound
    means: str          # what it means, and why
    judged: str         # which figures of a run it compares
    figures: Callable   # Run -> iterable of (where, figure)


@dataclass
class Run:
    """What a run measured, as the goals read it."""

    rows: list
    overhead: dict | None = None
    default_threads: int = 1    # fastopt's default thread count: every usable core
    busy: int = 0               # busy processes that spun throughout (--busy)

    def rows_of(self, implementation, optimizer=None, dtype=None, workload=None):
        return [r for r in self.rows if r["implementation"] == implementation
                and optimizer in (None, r["optimizer"]) and dtype in (None, r["dtype"])
                and workload in (None, r["workload"])]


def _where(row):
    return f"{row['optimizer']} {row['dtype']} {row['workload']} @{row['threads']}t"


def _pct_of_ceiling(optimizer, workload, min_threads=1):
    def figures(run):
        for r in run.rows_of("fastopt", optimizer, "float32", workload):
            if r.get("pct_of_ceiling") is not None and r["threads"] >= min_threads:
                yield _where(r), r["pct_of_ceiling"]
    return figures


def _other_rules_pct_of_ceiling(two_pass):
    """Every rule but Adam float32 that takes one pass (or, two_pass, two: LAMB), float32 and float64."""
    def figures(run):
        # float32 and float64 only: Adam's 16-bit and 8-bit modes have goals of their own
        for r in run.rows_of("fastopt", workload="1e7"):
            if (r["dtype"] in DTYPES and (r["optimizer"], r["dtype"]) != ("adam", "float32")
                    and r["optimizer"] in RULES and RULES[r["optimizer"]].second_pass == two_pass
                    and r.get("pct_of_ceiling") is not None):
                yield _where(r), r["pct_of_ceiling"]
    return figures


def _judged_threads(run, threads):
    """The thread counts a goal judges: "one" (1), "default" (fastopt's default) or "both"."""
    return {"one": {1}, "default": {run.default_threads}, "both": {1, run.default_threads}}[threads]


def _mode_pct_of_ceiling(modes, workload, threads="both"):
    def figures(run):
        for mode in modes:
            for r in run.rows_of("fastopt", "adam", mode, workload):
                if r["threads"] in _judged_threads(run, threads) and r.get("pct_of_ceiling") is not None:
                    yield _where(r), r["pct_of_ceiling"]
    return figures


def _mode_speedup_over(peer, modes, workload, threads):
    """A peer's time over fastopt's, Adam in each of ``modes``; in a mode the peer's row steps
    that mode's buffers as far as it can (torch-fused: see fastopt.bench.peers)."""
    def figures(run):
        for mode in modes:
            for r in run.rows_of("fastopt", "adam", mode, workload):
                if r["threads"] in _judged_threads(run, threads) and peer in r.get("speedup_over", {}):
                    yield _where(r), r["speedup_over"][peer]
    return figures


def _speedup_over(peer, workload, one_and_default_threads=False, rule="adam"):
    """A peer's time over fastopt's, one rule in float32."""
    def figures(run):
        for r in run.rows_of("fastopt", rule, "float32", workload):
            if one_and_default_threads and r["threads"] not in (1, run.default_threads):
                continue
            if peer in r.get("speedup_over", {}):
                yield _where(r), r["speedup_over"][peer]
    return figures


# The rules whose torch step has no fused CPU kernel: torch.optim's NAdam, RAdam and Adamax, and
# schedulefree's AdamWScheduleFree, written in torch's foreach ops.  Their fastest torch step is foreach=True.
FOREACH_ONLY = ("nadam", "radam", "adamax", "schedule_free_adamw")


def _foreach_only_speedup(workload):
    def figures(run):
        for optimizer in FOREACH_ONLY:
            for r in run.rows_of("fastopt", optimizer, "float32", workload):
                if "torch-foreach" in r.get("speedup_over", {}):
                    yield _where(r), r["speedup_over"]["torch-foreach"]
    return figures


def _optim_over_list_call(workload):
    def figures(run):
        for r in run.rows_of("fastopt-optim", "adam", "float32", workload):
            if r.get("fastopt_speedup") is not None:
                yield _where(r), r["fastopt_speedup"]
    return figures


def _torch_wrapper_over_list_call(workload):
    def figures(run):
        for r in run.rows_of("fastopt-torch", "adam", "float32", workload):
            if r.get("fastopt_speedup") is not None:
                yield _where(r), r["fastopt_speedup"]
    return figures


def _torch_fused_over_torch_wrapper(workload, one_and_default_threads=False):
    """torch-fused's time over fastopt-torch's, rows of the same run and thread count."""
    def figures(run):
        fused = {r["threads"]: r for r in run.rows_of("torch-fused", "adam", "float32", workload)}
        for r in run.rows_of("fastopt-torch", "adam", "float32", workload):
            if one_and_default_threads and r["threads"] not in (1, run.default_threads):
                continue
            if r["threads"] in fused:
                yield _where(r), ratio(fused[r["threads"]], r)
    return figures


def _default_threads_over_one_thread(run):
    if run.busy != 1 or run.default_threads <= 1:
        return
    for workload in ("mnist-mlp", "1e7"):
        rows = {}
        for r in run.rows_of("fastopt", workload=workload):
            rows[(r["optimizer"], r["dtype"], r["threads"])] = r
        for (optimizer, dtype, threads), default in rows.items():
            one = rows.get((optimizer, dtype, 1))
            if threads == run.default_threads and one is not None:
                yield (f"{optimizer} {dtype} {workload} @{threads}t over @1t, 1 core busy",
                       ratio(default, one))


def _overhead(key, where, parallel_only=False):
    def figures(run):
        overhead = run.overhead
        if not overhead or key not in overhead:
            return
        if parallel_only and overhead.get("first_call_threads", 1) <= 1:
            return
        yield where.format(**overhead), overhead[key]
    return figures


_ADAM_BYTES = "28 bytes per float32 parameter (read param, grad, m, v; write param, m, v)"
_SIXTEEN_BIT = ("bfloat16", "float16")
_PAIRED = "the median of per-round ratios of samples interleaved in the same rounds"

GOALS = {goal.name: goal for goal in [
    Goal("adam-1e7-ceiling", ">=", 95.0, "%",
         f"At 1e7 elements the {_ADAM_BYTES} are far out of cache, so the step is bound by memory; "
         "the ceiling kernel moves the same bytes with next to no math, so reaching 95% of it means "
         "Adam's math hides behind the traffic.",
         f"fastopt's list call, Adam float32 on workload 1e7, every thread count: % of the ceiling "
         f"({_PAIRED}).",
         _pct_of_ceiling("adam", "1e7")),
    Goal("rules-1e7-ceiling", ">=", 90.0, "%",
         "The same for every other rule, and for float64: at 1e7 elements each is bound by memory, "
         "and is compared with the ceiling that moves its own number of state buffers.",
         "fastopt's list call, every one-pass rule in float32 and float64 but Adam float32 on workload 1e7, "
         "every thread count: % of the ceiling.",
         _other_rules_pct_of_ceiling(two_pass=False)),
    Goal("two-pass-rules-1e7-ceiling", ">=", 80.0, "%",
         "LAMB's trust ratio needs each tensor's norms before any param moves, so its step reads param and "
         "state twice and computes its update twice; the ceiling moves the same bytes in two passes, and "
         "the second computation must still hide within 20% of it.",
         "fastopt's list call, LAMB in float32 and float64 on workload 1e7, every thread count: % of the "
         "ceiling.",
         _other_rules_pct_of_ceiling(two_pass=True)),
    Goal("adam-1e7-numba", ">=", 1.0, "x",
         "numba compiles the same formula to a parallel loop with the same correctly rounded "
         "operations (fastmath off); out of cache both meet the memory limit, and fastopt must not "
         "be the slower.",
         "Adam float32 on 1e7, every thread count: numba's time over fastopt's.",
         _speedup_over("numba", "1e7")),
    Goal("adam-1e5-numba", ">=", 1.1, "x",
         "At 1e5 elements (2.8 MB, in cache) the step is bound by its divide and square root, not by "
         "memory; numba's loop does the same operations, so fastopt's vectorized kernels must lead it "
         "by 10%, on one thread and on all.",
         "Adam float32 on 1e5, at 1 thread and at fastopt's default thread count: numba's time over "
         "fastopt's.",
         _speedup_over("numba", "1e5", one_and_default_threads=True)),
    Goal("adam-1e5-torch-fused", ">=", 3.0, "x",
         "torch.optim.Adam(fused=True) is torch's fastest CPU step; on a buffer in cache, where the "
         "work per call and the math decide, fastopt must be 3 times as fast.",
         "Adam float32 on 1e5, every thread count: torch-fused's time over fastopt's.",
         _speedup_over("torch-fused", "1e5")),
    Goal("adam-mnist-mlp-torch-fused", ">=", 2.5, "x",
         "A small model (6 tensors, 235,146 params) is where the optimizer's cost is per call and "
         "per tensor more than per byte: fastopt's one list call must be 2.5 times as fast as "
         "torch's fused step.",
         "Adam float32 on mnist-mlp, every thread count: torch-fused's time over fastopt's.",
         _speedup_over("torch-fused", "mnist-mlp")),
    Goal("adam-gpt2-small-torch-fused", ">=", 1.05, "x",
         "gpt2-small (148 tensors, 124.4M params, 3.5 GB moved per step) is bound by memory for both; "
         "fastopt must still be 5% faster than torch's fused step, by running nearer the ceiling.",
         "Adam float32 on gpt2-small, every thread count: torch-fused's time over fastopt's.",
         _speedup_over("torch-fused", "gpt2-small")),
    Goal("foreach-rules-mnist-mlp", ">=", 3.0, "x",
         "NAdam, RAdam, Adamax and Schedule-Free AdamW have no fused CPU step in torch: its fastest is "
         "foreach=True (schedulefree's step is foreach ops too), a dozen passes over memory and a kernel "
         "launch per op; on a small model fastopt's one list call must be 3 times as fast.",
         "Each of those rules, float32 on mnist-mlp, every thread count: torch-foreach's time over "
         "fastopt's.",
         _foreach_only_speedup("mnist-mlp")),
    Goal("foreach-rules-gpt2-small", ">=", 1.5, "x",
         "On gpt2-small both are bound by memory, and torch's foreach step reads and writes its "
         "buffers several times where fastopt's reads and writes them once: 1.5 times as fast at least.",
         "Each of those rules, float32 on gpt2-small, every thread count: torch-foreach's time over "
         "fastopt's.",
         _foreach_only_speedup("gpt2-small")),
    Goal("adam-gpt2-small-ceiling", ">=", 95.0, "%",
         "On a many-core machine it takes many threads to draw the whole memory bandwidth; from 16 "
         "threads the list call must split 148 tensors of very different sizes evenly enough to "
         "reach 95% of the ceiling.",
         "Adam float32 on gpt2-small, at 16 threads or more only: % of the ceiling.",
         _pct_of_ceiling("adam", "gpt2-small", min_threads=16)),
    Goal("optim-adam-mnist-mlp", "<=", 1.3, "x",
         "fastopt.optim.Adam.step checks the grads, builds each group's arguments and counts steps, "
         "then makes the same list call: on mnist-mlp that may cost at most 30% over the bare "
         "adam_step call.",
         f"Adam float32 on mnist-mlp, every thread count: fastopt-optim's time over fastopt's ({_PAIRED}).",
         _optim_over_list_call("mnist-mlp")),
    Goal("optim-adam-16x148", "<=", 1.2, "x",
         f"{OVERHEAD_TENSORS} tensors of 16 elements (gpt2-small's count, next to no math) make a step "
         "that is all per-call and per-tensor cost: the training API may add at most 20% to the bare "
         "call's.",
         "Adam float32 on 16x148, every thread count: fastopt-optim's time over fastopt's.",
         _optim_over_list_call("16x148")),
    Goal("fastopt-torch-adam-mnist-mlp", "<=", 1.3, "x",
         "fastopt.torch.Adam.step collects each group's parameters with a gradient, checks that its cached "
         "views still show the same memory and state, takes a view of each gradient and makes the same list "
         "call: on mnist-mlp that may cost at most 30% over the bare adam_step call on the same memory.",
         f"Adam float32 on mnist-mlp, every thread count: fastopt-torch's time over fastopt's ({_PAIRED}).",
         _torch_wrapper_over_list_call("mnist-mlp")),
    Goal("fastopt-torch-mnist-mlp-fused", ">=", 2.0, "x",
         "A torch user who changes one import, from torch.optim.Adam(fused=True) to fastopt.torch.Adam, on "
         "a small model's CPU parameters: the step must take at most half the time.",
         "Adam float32 on mnist-mlp, every thread count: torch-fused's time over fastopt-torch's.",
         _torch_fused_over_torch_wrapper("mnist-mlp")),
    Goal("fastopt-torch-gpt2-small-fused", ">=", 1.05, "x",
         "The same change on gpt2-small, where both are bound by memory: fastopt.torch.Adam must still be 5% "
         "faster than torch's fused step, on one thread and on all.",
         "Adam float32 on gpt2-small, at 1 thread and at fastopt's default thread count: torch-fused's time "
         "over fastopt-torch's.",
         _torch_fused_over_torch_wrapper("gpt2-small", one_and_default_threads=True)),
    Goal("busy-default-threads", "<=", 1.2, "x",
         "With one core kept busy by another process, a step at the default thread count (every "
         "core) waits for its thread on the shared core; it must not get more than 1.2 times slower "
         "than the same step on one thread, so the default stays safe on a loaded machine.",
         "Runs with --busy 1 only, where the default thread count is above 1: every rule and dtype "
         "measured on mnist-mlp and on 1e7, fastopt's median at the default thread count over its "
         "median at 1 thread (rows of the same run, timed one after the other).",
         _default_threads_over_one_thread),
    Goal("adam-16bit-1e7-ceiling", ">=", 90.0, "%",
         "bfloat16 and float16 Adam with every buffer 16-bit moves 14 bytes per parameter, half of float32's, "
         "and converts each value to float32 and back: at 1e7 elements the conversions and the math must "
         "still hide behind the traffic, within 10% of the ceiling that moves the same 16-bit buffers.",
         "fastopt's list call, Adam bfloat16 and float16 on workload 1e7, at 1 thread and at fastopt's default "
         f"thread count: % of the ceiling ({_PAIRED}).",
         _mode_pct_of_ceiling(_SIXTEEN_BIT, "1e7")),
    Goal("adam-16bit-1e7-torch-fused-1t", ">=", 1.6, "x",
         "torch.optim.Adam(fused=True) steps bfloat16 and float16 CPU tensors in their own dtype too; on one "
         "thread, where a core's work on each element decides, fastopt must be 1.6 times as fast.",
         "Adam bfloat16 and float16 on 1e7, at 1 thread: torch-fused's time over fastopt's.",
         _mode_speedup_over("torch-fused", _SIXTEEN_BIT, "1e7", "one")),
    Goal("adam-16bit-1e7-torch-fused", ">=", 1.15, "x",
         "The same at every core, where both come nearer the memory's limit: 15% faster at least.",
         "Adam bfloat16 and float16 on 1e7, at fastopt's default thread count: torch-fused's time over "
         "fastopt's.",
         _mode_speedup_over("torch-fused", _SIXTEEN_BIT, "1e7", "default")),
    Goal("adam-master-1e7-ceiling", ">=", 90.0, "%",
         "float32 master weights and state with bfloat16 grads, writing the model's bfloat16 weights in the "
         "same pass, move 28 bytes per parameter (4 + 4 + 2 + 8 + 8 + 2); within 10% of the ceiling that "
         "moves the same buffers.",
         "fastopt's list call, Adam master-bfloat16 on 1e7, at 1 thread and at fastopt's default thread "
         f"count: % of the ceiling ({_PAIRED}).",
         _mode_pct_of_ceiling(("master-bfloat16",), "1e7")),
    Goal("adam-master-1e7-torch-fused", ">=", 1.3, "x",
         "torch has no step that writes a 16-bit copy: its fused float32 step, then a pass that copies the "
         "params to bfloat16, reads the params a second time; fastopt's one pass must be 1.3 times as fast "
         "at every core.",
         "Adam master-bfloat16 on 1e7, at fastopt's default thread count: the time of torch-fused (float32 "
         "step plus copy pass) over fastopt's.",
         _mode_speedup_over("torch-fused", ("master-bfloat16",), "1e7", "default")),
    Goal("adam-master-1e7-deepspeed", ">=", 1.2, "x",
         "DeepSpeed's CPU Adam, the CPU-offload step users run, steps the bfloat16 weights with float32 state and "
         "keeps no master; fastopt's master step must be 1.2 times as fast although it keeps one.",
         "Adam master-bfloat16 on 1e7, at fastopt's default thread count: the time of deepspeed-cpu-adam "
         "(bfloat16 params, float32 state) over fastopt's (when DeepSpeed is installed).",
         _mode_speedup_over("deepspeed-cpu-adam", ("master-bfloat16",), "1e7", "default")),
    Goal("lion-1e7-deepspeed", ">=", 1.3, "x",
         "DeepSpeed's CPU Lion is the CPU-offload Lion users run; Lion moves 20 bytes per parameter and "
         "fastopt's one pass must be 1.3 times as fast as it, on one thread and on all.",
         "Lion float32 on 1e7, at 1 thread and at fastopt's default thread count: the time of "
         "deepspeed-cpu-lion over fastopt's (when DeepSpeed is installed).",
         _speedup_over("deepspeed-cpu-lion", "1e7", one_and_default_threads=True, rule="lion")),
    Goal("adam-8bit-1e7-ceiling", ">=", 85.0, "%",
         "Adam with 8-bit state and float32 params moves about 16.06 bytes per parameter, but decodes and "
         "encodes both moments and finds each block's absmax; within 15% of the ceiling that moves the same "
         "codes and scales.",
         "fastopt's list call, Adam float32-8bit on 1e7, at 1 thread and at fastopt's default thread count: "
         f"% of the ceiling ({_PAIRED}).",
         _mode_pct_of_ceiling(("float32-8bit",), "1e7")),
    Goal("adam-8bit-1e7-torch-fused", ">=", 1.5, "x",
         "8-bit state is for memory, and it must not cost speed: torch has no 8-bit CPU step, so against "
         "torch's fused float32 Adam, which moves 28 bytes where fastopt moves 16, fastopt must be 1.5 "
         "times as fast at every core.",
         "Adam float32-8bit on 1e7, at fastopt's default thread count: torch-fused's time (float32 state) "
         "over fastopt's.",
         _mode_speedup_over("torch-fused", ("float32-8bit",), "1e7", "default")),
    Goal("adam-8bit-1e7-torch-fused-1t", ">=", 1.3, "x",
         "On one thread the 8-bit step's conversions weigh more against the bytes saved: 1.3 times as fast "
         "as torch's fused float32 Adam.",
         "Adam float32-8bit on 1e7, at 1 thread: torch-fused's time (float32 state) over fastopt's.",
         _mode_speedup_over("torch-fused", ("float32-8bit",), "1e7", "one")),
    Goal("adam-16-step", "<=", 1.0, "us",
         "One adam_step call on a 16-element array: the cost of a step with next to nothing to "
         "compute (argument checks, releasing the GIL, dispatch).",
         "The median of interleaved samples of back-to-back calls, at the run's largest thread count.",
         _overhead("adam16_us", "Adam float32, one array of 16 elements")),
    Goal("list-per-tensor", "<=", 0.2, "us",
         "What each extra tensor adds to a list call: a model of many small tensors pays it every step.",
         f"(list of {OVERHEAD_TENSORS} - list of 1) / {OVERHEAD_TENSORS - 1}, lists of 16-element "
         "tensors timed side by side.",
         _overhead("per_tensor_us", f"Adam float32, lists of {OVERHEAD_TENSORS} and of 1 tensor of 16")),
    Goal("import-time", "<=", 50.0, "ms",
         "import fastopt with numpy already imported: a script or a test that imports it should not "
         "notice.",
         "The median over 5 fresh interpreters.",
         _overhead("import_ms", "import fastopt, numpy already imported")),
    Goal("first-parallel-call", "<=", 3.0, "x",
         "The first parallel call of a process starts OpenMP's threads; it may cost at most 3 times "
         "the next calls, so a short run or a test does not pay a warm-up.",
         f"Adam float32 on {FIRST_CALL_ELEMENTS:.0e} elements in a fresh interpreter at the run's largest "
         "thread count, when above 1: the first call over the median of the next 100 (median over 5 "
         "interpreters).",
         _overhead("first_call_ratio", f"Adam float32, {FIRST_CALL_ELEMENTS:.0e} elements, "
                   "{first_call_threads} threads, first call over the next 100", parallel_only=True)),
]}


def verdict(goal, where, figure):
    """The judgement of one figure against its goal."""
    met = figure >= goal.bound if goal.op == ">=" else figure <= goal.bound
    # how far from the bound, as a share of it
    missed = (1 - figure / goal.bound) if goal.op == ">=" else (figure / goal.bound - 1)
    return {"goal": goal.name, "where": where, "measured": figure, "op": goal.op, "bound": goal.bound,
            "unit": goal.unit, "met": met, "missed_by_pct": None if met else 100 * missed}


def evaluate_goals(rows, overhead=None, default_threads=1, busy=0):
    """One verdict per goal and place that this run measured, in the order of GOALS."""
    run = Run(rows, overhead, default_threads, busy)
    return [verdict(goal, where, figure) for goal in GOALS.values() for where, figure in goal.figures(run)]


def format_goals(verdicts):
    if not verdicts:
        return "Goals: none applies to what was measured."
    width = max(len(v["goal"]) for v in verdicts)
    lines = ["Goals (medians, ratios side by side in this run):"]
    for v in verdicts:
        status = "met   " if v["met"] else "MISSED"
        detail = "" if v["met"] else f", missed by {v['missed_by_pct']:.1f}%"
        lines.append(f"  {status} {v['goal']:<{width}}  {v['where']}: {v['measured']:.3g}{v['unit']} "
                     f"(needs {v['op']} {v['bound']:g}{v['unit']}){detail}")
    missed = sum(not v["met"] for v in verdicts)
    lines.append(f"  {len(verdicts) - missed} of {len(verdicts)} met.")
    return "\n".join(lines)
