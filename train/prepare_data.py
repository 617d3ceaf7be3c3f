"""Gets every dataset into the data directory: links from DATA_MIRROR, else downloads.

Usage: python -m train.prepare_data [--root data]
"""

import argparse
import os

from train.data import load_planetoid, load_tu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.environ.get("DATA_DIR", "data"))
    args = parser.parse_args()
    mirror = os.environ.get("DATA_MIRROR")
    cora = load_planetoid("Cora", args.root, mirror)
    mutag = load_tu("MUTAG", args.root, mirror)
    print(f"Cora: {cora[0].num_nodes} nodes; MUTAG: {len(mutag)} graphs (root {args.root})")


if __name__ == "__main__":
    main()
