"""``python -m vae_lib.cli.train_models [NAME ...]`` (``make models``): train the stored models again.

    python -m vae_lib.cli.train_models                 # every recipe, into vae_lib/store/models/
    python -m vae_lib.cli.train_models vae_converged   # one; continues a cut-off run
    python -m vae_lib.cli.train_models sweep_z2 --out artifacts/try --max-epochs 2   # a quick try

The recipes, the training and the files are :mod:`vae_lib.store.zoo`'s; this is its command line.
"""

from __future__ import annotations

import argparse
import sys

from vae_lib.store import zoo

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and make each model; the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m vae_lib.cli.train_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=list(zoo.RECIPES), help="which models (default: all)")
    parser.add_argument("--out", default=None, help="folder for the models (default: the stored models' folder)")
    parser.add_argument("--max-epochs", type=int, default=None, help="fewer epochs, for a try (needs --out)")
    parser.add_argument("--eval-k", type=int, default=None, help="samples per test image for L_k (needs --out)")
    parser.add_argument("--fresh", action="store_true", help="ignore resume files and start over")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in zoo.RECIPES]
    if unknown:
        parser.error(f"no recipe called {', '.join(unknown)}; the recipes are {', '.join(sorted(zoo.RECIPES))}.")
    if (args.max_epochs is not None or args.eval_k is not None) and args.out is None:
        parser.error("--max-epochs and --eval-k need --out: a shorter run must not replace the stored models.")
    for name in args.names:
        zoo.make(name, args.out, max_epochs=args.max_epochs, eval_k=args.eval_k, fresh=args.fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
