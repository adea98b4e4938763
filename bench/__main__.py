"""``python -m bench [NAME ...]``: runs benchmarks and prints their ratios on the last line.

Each benchmark is a module of this package with ``add_arguments(parser)`` and
``run(args) -> dict[str, float]`` returning its ratios (ours / reference; lower is better);
add one by adding it to :data:`BENCHMARKS`.
"""

import argparse
import importlib
import sys

BENCHMARKS = {
    "git-server": "bench.git_server",
    "replication": "bench.replication",
    "faults": "bench.faults",
    "operator": "bench.operator",
    "planned": "bench.planned_change",
    "operator-faults": "bench.operator_faults",
    "operator-watch": "bench.operator_watch",
    "operator-idle": "bench.operator_idle",
    "operator-scale": "bench.operator_memory",
    "backup": "bench.backup",
    "maintenance": "bench.maintenance",
    "rejoin": "bench.rejoin",
    "webhooks": "bench.webhooks",
    "ssh-clone": "bench.ssh_clone",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        choices=[*BENCHMARKS, []],
        metavar="NAME",
        help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})",
    )
    modules = {name: importlib.import_module(path) for name, path in BENCHMARKS.items()}
    for module in modules.values():
        module.add_arguments(parser)
    args = parser.parse_args(argv)
    ratios: dict[str, float] = {}
    for name in args.names or list(BENCHMARKS):
        print(f"== benchmark {name}", flush=True)
        for key, value in modules[name].run(args).items():
            ratios[f"{name}.{key}"] = value
    print(
        "ratios (ours / reference): "
        + " ".join(f"{key}={value:.2f}" for key, value in ratios.items()),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
