"""Gets every served model's dataset into the data directory (`make data`).

Each experiment's data config names a `prepare` function that links raw files from DATA_MIRROR
(or downloads them) and does any one-off processing. Usage: python -m train.core.prepare
"""

from hydra.utils import get_method

from train.core.registry import experiment_config, specs


def main() -> None:
    done: set[str] = set()
    for experiment in sorted({s.experiment for s in specs()}):
        data = experiment_config(experiment).data
        if data.name in done or not data.get("prepare"):
            continue
        done.add(data.name)
        print(get_method(data.prepare)(data))


if __name__ == "__main__":
    main()
