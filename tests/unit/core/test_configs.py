"""Every Hydra config composes, and every model config instantiates."""

import pytest
from hydra.utils import get_method, instantiate

from train.core.registry import CONFIGS, experiment_config

EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
GROUP_OPTIONS = {
    g: sorted(p.stem for p in (CONFIGS / g).glob("*.yaml")) for g in ("trainer", "logger")
}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("trainer", GROUP_OPTIONS["trainer"])
@pytest.mark.parametrize("logger", GROUP_OPTIONS["logger"])
def test_every_combination_composes(experiment, trainer, logger):
    cfg = experiment_config(experiment, f"trainer={trainer}", f"logger={logger}")
    assert cfg.name == experiment
    assert cfg.paths.artifacts.endswith(f"/{experiment}")
    assert callable(get_method(cfg.runner))
    assert cfg.trainer.max_epochs > 0


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_model_instantiates_from_config(experiment):
    cfg = experiment_config(experiment)
    net = instantiate(cfg.model.net, in_dim=7, num_classes=len(cfg.data.labels))
    assert sum(p.numel() for p in net.parameters()) > 0


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_has_an_archive(experiment):
    """Names match end to end: experiment = model_archives/<name>/ = .mar = URL."""
    archive = CONFIGS.parent / "model_archives" / experiment
    assert (archive / "model-config.yaml").is_file()
    assert (archive / "archive.yaml").is_file()


def test_bert_s_accumulation_steps_on_the_default_s_batch_and_bf16_asks_for_autocast():
    default = experiment_config("imdb_bert")
    acc = experiment_config("imdb_bert", "imdb_run=accumulate")
    steps = acc.trainer.accumulate_grad_batches
    assert steps > 1 and acc.data.batch_size * steps == default.data.batch_size
    assert experiment_config("imdb_bert", "imdb_run=bf16").trainer.precision == "bf16-mixed"
    # the default run is neither: imdb_run=cpu adds nothing to what the pipeline's params hold
    assert "precision" not in default.trainer and "accumulate_grad_batches" not in default.trainer
