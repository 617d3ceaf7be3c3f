"""serve/staged.py's plan: the order models are trained in, the estimates it prints, and the
make rule that says whether a .mar is current."""

import os
import time
from pathlib import Path

from serve.staged import build_order, estimate, is_current, progress
from train.core.registry import ModelSpec, specs


def model(name: str, seconds: float, requires: tuple[str, ...] = ()) -> ModelSpec:
    return ModelSpec(name, name, "h.py", requires=requires, raw={"train_seconds": seconds})


def test_quickest_first_but_never_before_what_it_requires():
    bert, int8 = model("imdb_bert", 440), model("imdb_bert_int8", 50, ("imdb_bert",))
    order = build_order([bert, model("flowers_cnn", 1280), int8, model("cora_gcn", 70)])
    assert [m.name for m in order] == ["cora_gcn", "imdb_bert", "imdb_bert_int8", "flowers_cnn"]
    # A requirement that is already served (not pending) does not hold a model back.
    assert [m.name for m in build_order([int8, model("a", 60)])] == ["imdb_bert_int8", "a"]


def test_every_registered_model_has_an_estimate_and_the_registry_order_is_complete():
    every = specs()
    assert all("train_seconds" in m.raw and estimate(m) > 0 for m in every)
    order = [m.name for m in build_order(every)]
    assert sorted(order) == sorted(m.name for m in every)
    for m in every:
        assert all(order.index(r) < order.index(m.name) for r in m.requires)


def test_progress_counts_down_the_current_model_and_adds_up_the_rest():
    order = [model("a", 120), model("b", 600), model("c", 60)]
    text = progress(["x"], order, pace=1.0, elapsed=40).splitlines()
    assert text[0] == "serving 1: x"
    assert text[1] == "  training a: about 80 s left"
    assert text[2] == "  then b: READY in about 11 min"  # 80 s + 600 s
    assert text[3] == "  then c: READY in about 12 min"  # 740 s
    # A machine twice as slow as the estimates so far doubles them.
    assert progress([], order, pace=2.0, elapsed=0).splitlines()[1].endswith("about 4 min left")
    assert progress([], [], 1.0, 0) == "serving 0: nothing yet"


def test_is_current_is_makes_own_answer(tmp_path: Path):
    (tmp_path / "Makefile").write_text("model_store/%.mar: artifacts/%/model.pt\n\tcp $< $@\n")
    (tmp_path / "artifacts" / "m").mkdir(parents=True)
    (tmp_path / "model_store").mkdir()
    pt = tmp_path / "artifacts" / "m" / "model.pt"
    pt.write_text("w")
    assert not is_current("m", tmp_path)  # no .mar yet
    mar = tmp_path / "model_store" / "m.mar"
    mar.write_text("w")
    assert is_current("m", tmp_path)
    later = time.time() + 10
    os.utime(pt, (later, later))  # the artifact changed after the .mar was built
    assert not is_current("m", tmp_path)
