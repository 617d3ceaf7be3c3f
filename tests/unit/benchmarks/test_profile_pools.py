"""Payload pools for the load tests: real, varied requests from the data directory."""

import base64
import json

import pytest

from tests.conftest import ROOT, mirror
from train.payload_pools import POOLS, served_models, write_pools

pytestmark = pytest.mark.skipif(mirror() is None, reason="DATA_MIRROR is not set")


def bodies(out, index, name):
    return [(out / p["file"]).read_bytes() for p in index[name]["payloads"]]


def test_graph_pools_are_real_varied_and_reproducible(tmp_path):
    index = write_pools(tmp_path / "a", ["mutag_gcn", "cora_gcn"], size=30, seed=3)
    for name in ("mutag_gcn", "cora_gcn"):
        entries = index[name]["payloads"]
        assert len(entries) == 30
        assert {p["content_type"] for p in entries} == {"application/json"}
        assert all("instance" not in p for p in entries)  # JSON bodies are their own instance
        assert len(set(bodies(tmp_path / "a", index, name))) >= 25
    mutag = [json.loads(b) for b in bodies(tmp_path / "a", index, "mutag_gcn")]
    assert all(len(r["edge_index"]) == 2 for r in mutag)
    sizes = {len(r.get("atoms") or r.get("x")) for r in mutag}
    assert min(sizes) >= 10 and max(sizes) <= 28 and len(sizes) > 5  # MUTAG: 10 to 28 atoms
    cora = [json.loads(b) for b in bodies(tmp_path / "a", index, "cora_gcn")]
    nodes = [len(r.get("x_sparse") or r.get("x")) for r in cora]
    assert min(nodes) < 10 < max(nodes)  # 1-hop and 2-hop neighbourhoods
    # Same seed, same requests; each model's pool does not depend on which others are written.
    again = write_pools(tmp_path / "b", ["mutag_gcn"], size=30, seed=3)
    assert bodies(tmp_path / "b", again, "mutag_gcn") == bodies(tmp_path / "a", index, "mutag_gcn")


def same_request(body: bytes, ctype: str, instance: dict) -> bool:
    """Whether a non-JSON body and its Vertex instance carry the same input."""
    if ctype == "chemical/x-xyz":
        lines = body.decode().splitlines()
        return int(lines[0]) == len(instance["pos"]) == len(lines) - 2
    if ctype == "text/plain":
        return instance == {"text": body.decode()}
    return base64.b64decode(instance["b64"]) == body  # image/jpeg, image/png


@pytest.mark.parametrize(
    "name, binary",
    [("qm9_et", "chemical/x-xyz"), ("imdb_bert", "text/plain"), ("flowers_vit", "image/jpeg")],
)
def test_non_json_requests_carry_their_vertex_instance(tmp_path, name, binary):
    if not (ROOT / "model_archives" / name).exists():
        pytest.skip(f"{name} is not served")
    index = write_pools(tmp_path, [name], size=40, seed=0)
    entries = index[name]["payloads"]
    types = [p["content_type"] for p in entries]
    assert binary in types and "application/json" in types  # both forms in the pool
    for p in entries:
        body = (tmp_path / p["file"]).read_bytes()
        if p["content_type"] == "application/json":
            assert "instance" not in p and json.loads(body)
        else:
            instance = json.loads((tmp_path / p["instance"]).read_text())
            assert same_request(body, p["content_type"], instance)
    assert len({(tmp_path / p["file"]).read_bytes() for p in entries}) == len(entries)


def test_every_served_model_has_a_pool_and_unknown_models_are_refused(tmp_path):
    assert set(served_models()) <= set(POOLS)
    with pytest.raises(KeyError, match="no payload pool for nope"):
        write_pools(tmp_path, ["nope"], size=1, seed=0)
