"""serve/config.py: config.properties read and rewritten, and loopback ports that are free."""

import socket

import pytest

from serve.config import (
    ADDRESS_KEYS,
    CONFIG,
    PORT_KEYS,
    free_addresses,
    free_port,
    read_properties,
    worker_port_base,
    write_properties,
)


def test_free_addresses_are_loopback_distinct_and_bindable():
    addresses = free_addresses()
    assert set(addresses) == set(ADDRESS_KEYS + PORT_KEYS) | {"initial_worker_port"}
    urls = [addresses[k] for k in ADDRESS_KEYS]
    assert all(u.startswith("http://127.0.0.1:") for u in urls)
    ports = [int(u.rsplit(":", 1)[1]) for u in urls] + [int(addresses[k]) for k in PORT_KEYS]
    assert len(set(ports)) == len(ports)  # five listeners, five ports
    for port in ports:  # nothing holds them any more: torchserve can bind every one
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_each_server_gets_a_worker_port_range_with_no_socket_in_tmp(tmp_path):
    # Worker sockets are <tmp>/.ts.sock.<port>: a range holding one is never handed out.
    for port in range(20_000, 20_020):
        (tmp_path / f".ts.sock.{port}").touch()
    assert worker_port_base(span=10, lo=20_000, hi=20_030, tmp=tmp_path) == 20_020
    (tmp_path / ".ts.sock.20025").touch()
    with pytest.raises(RuntimeError, match="no range of 10 worker ports"):
        worker_port_base(span=10, lo=20_000, hi=20_030, tmp=tmp_path)
    bases = {int(free_addresses()["initial_worker_port"]) for _ in range(10)}
    assert len(bases) > 1 and all(10_000 <= b < 60_000 for b in bases)  # each server its own


def test_free_port_is_not_the_committed_one():
    port = free_port()
    assert 0 < port < 65536
    assert f":{port}" not in read_properties(CONFIG)["inference_address"]


def test_write_properties_replaces_in_place_appends_and_keeps_comments(tmp_path):
    src = tmp_path / "in.properties"
    src.write_text("# why the port\ninference_address=http://127.0.0.1:8080\nkeep=1\n")
    props = write_properties(
        src, tmp_path / "out.properties", {"inference_address": "http://x:1", "new": "2"}
    )
    assert props == {"inference_address": "http://x:1", "keep": "1", "new": "2"}
    lines = (tmp_path / "out.properties").read_text().splitlines()
    assert lines == ["# why the port", "inference_address=http://x:1", "keep=1", "new=2"]
    assert read_properties(src)["inference_address"] == "http://127.0.0.1:8080"  # src as it was


def test_the_committed_config_binds_every_listener_to_loopback():
    props = read_properties(CONFIG)
    for key in ADDRESS_KEYS:
        assert props[key].startswith("http://127.0.0.1:"), key
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
