"""The demo's parts.  Each module has ``Settings`` (with ``PRESETS`` for --quick and --full),
``run(settings, seed, show_progress)`` returning the numbers behind its figures,
``plot(result, out_dir)`` returning the PNG paths, and ``table(result)`` for the terminal."""

PARTS = {
    "surfaces": "fastopt.demo.experiments.surfaces",
    "gd-variants": "fastopt.demo.experiments.gd_variants",
    "adam-paper": "fastopt.demo.experiments.adam_paper",
    "landscape": "fastopt.demo.experiments.landscape",
    "cost": "fastopt.demo.experiments.cost",
    "precision": "fastopt.demo.experiments.precision",
    "state-8bit": "fastopt.demo.experiments.state_8bit",
}
