"""serve/__main__.py in-process: token, build, status and the curl examples it prints."""

import pytest

from serve import __main__ as cli
from serve.server import attach


def test_token_for_a_remote_host_prints_nothing(capsys):
    cli.main(["token", "--host", "https://torchserve-xyz-ew.a.run.app"])
    assert capsys.readouterr().out == "\n"


def test_build_of_an_unknown_model_exits_naming_the_registered_ones(tmp_path):
    with pytest.raises(SystemExit, match="is not a served model"):
        cli.main(["build", "nope", "--artifacts", str(tmp_path)])


def test_build_without_an_artifact_says_to_train_it(tmp_path):
    from train.core.registry import served_models

    with pytest.raises(SystemExit, match="train it first"):
        cli.main(["build", served_models()[0], "--artifacts", str(tmp_path)])


def test_start_with_an_empty_store_refuses(tmp_path):
    with pytest.raises(SystemExit, match="make archive"):
        cli.main(["start", "--store", str(tmp_path)])


def test_status_of_a_server_that_is_not_up(tmp_path, capsys):
    config = tmp_path / "ts.properties"
    config.write_text(
        "inference_address=http://127.0.0.1:9\nmanagement_address=http://127.0.0.1:9\n"
        "metrics_address=http://127.0.0.1:9\n"
    )
    assert cli.status(config, tmp_path) == 1
    assert "not running" in capsys.readouterr().out


def test_examples_are_curl_commands_with_the_token(capsys):
    cli.print_examples(attach(), ["m"])
    out = capsys.readouterr().out
    assert 'curl -H "Authorization: Bearer $(scripts/token)" http://127.0.0.1:8080/ping' in out
    assert "http://127.0.0.1:8082/metrics" in out and out.rstrip().endswith("make stop")
