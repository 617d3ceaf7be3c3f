"""The families' commands: one composed config, JSON out, usage on a wrong command."""

import json

import pytest

from train.core.cli import run_command


def test_runs_the_named_command_on_the_composed_config(capsys):
    seen = {}

    def name_of(cfg):
        seen["cfg"] = cfg
        return {"name": cfg.name, "epochs": cfg.trainer.max_epochs}

    out = run_command(
        "train.x", ["show", "experiment=cora_gat", "trainer.max_epochs=7"], {"show": name_of}
    )
    assert out == {"name": "cora_gat", "epochs": 7}
    assert json.loads(capsys.readouterr().out) == out


@pytest.mark.parametrize("argv", [[], ["train"], ["experiment=cora_gcn"]])
def test_a_missing_or_unknown_command_prints_the_usage(argv):
    with pytest.raises(SystemExit, match=r"usage: python -m train.x show\|score experiment="):
        run_command("train.x", argv, {"show": dict, "score": dict})
