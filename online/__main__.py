"""The online loop's command line.

    python -m online init    [overrides]   cut QM9 into shards, version the first state
    python -m online arrive  [overrides]   one more shard becomes available (a DVC version)
    python -m online step    [overrides]   trigger? -> fine-tune -> gate -> .mar -> hot swap
    python -m online watch   [overrides]   arrive + step every online.watch.interval_s
    python -m online status  [overrides]   data versions, lineage, what the server serves
    python -m online reconcile [overrides] serve the lineage's version again (after restart)
    python -m online restore K [overrides] check data version K out of DVC

Overrides are Hydra's, on experiment=qm9_et + online=default, e.g. online.trigger_fraction=0.25.
"""

import argparse
import json
import logging

from omegaconf import DictConfig

from online import loop
from online.data import DvcWorkspace
from train.core.registry import experiment_config

COMMANDS = ("init", "arrive", "step", "watch", "status", "reconcile", "restore")


def load_config(overrides: list[str], experiment: str = "qm9_et") -> DictConfig:
    """The training config of the experiment with the online group composed in."""
    return experiment_config(experiment, "+online=default", *overrides)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("args", nargs="*", help="data version for restore, then overrides")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = list(ns.args)
    if ns.command == "restore":
        if not args or not args[0].isdigit():
            parser.error("restore needs a data version number")
        cfg = load_config(args[1:])
        print(DvcWorkspace(cfg.online).restore(int(args[0])))
        return
    cfg = load_config(args)
    result = getattr(loop, ns.command)(cfg)
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
