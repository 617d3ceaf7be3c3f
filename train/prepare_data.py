"""Gets every served model's dataset into the data directory (`make data`).

Each experiment's data config names a `prepare` function that links raw files from DATA_MIRROR
(or downloads them) and does any one-off processing. Usage: python -m train.prepare_data
"""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import get_method

ROOT = Path(__file__).resolve().parent.parent


def served_experiments() -> list[str]:
    """Every model under model_archives/, by the experiment its archive.yaml names."""
    import yaml

    return sorted(
        yaml.safe_load(p.read_text())["experiment"]
        for p in (ROOT / "model_archives").glob("*/archive.yaml")
    )


def main() -> None:
    done: set[str] = set()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        for experiment in served_experiments():
            data = compose("train", overrides=[f"experiment={experiment}"]).data
            if data.name in done or not data.get("prepare"):
                continue
            done.add(data.name)
            print(get_method(data.prepare)(data))


if __name__ == "__main__":
    main()
