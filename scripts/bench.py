"""Benchmarks, as ratios against reference implementations measured in the same run.

Usage: ``python scripts/bench.py NAME [options]`` where NAME is one of the
``scripts/bench_<NAME>.py`` modules (encoder, tokenizer, t5, unilm, heads, ...).
Each module exposes ``main(argv)`` and prints a Markdown table.
"""
import importlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def available():
    """Names of the benchmark modules next to this script."""
    return sorted(
        f[len("bench_"):-3]
        for f in os.listdir(HERE)
        if f.startswith("bench_") and f.endswith(".py")
    )


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    names = available()
    if not argv or argv[0] not in names:
        found = argv[0] if argv else "nothing"
        sys.exit(f"usage: bench.py NAME [options]; expected NAME in {names}, found {found!r}")
    sys.path.insert(0, HERE)
    module = importlib.import_module("bench_" + argv[0])
    return module.main(argv[1:])


if __name__ == "__main__":
    main()
