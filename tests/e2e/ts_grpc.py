"""gRPC clients of the running torchserve, from the .proto files inside its own model-server.jar.

The stubs are compiled at test time with grpcio-tools, so they always match the installed
TorchServe (0.12: inference.proto on grpc_inference_port, with open_inference_grpc.proto
beside it when ts_open_inference_protocol is on, management.proto on grpc_management_port);
nothing generated is committed.
"""

import importlib
import importlib.resources
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import grpc
import ts
from grpc_tools import protoc

JAR = Path(ts.__file__).parent / "frontend" / "model-server.jar"
PROTOS = ("inference.proto", "management.proto", "open_inference_grpc.proto")


def compile_stubs(out: Path) -> dict[str, tuple[ModuleType, ModuleType]]:
    """{"inference"|"management": (messages module, stub module)} compiled into `out`."""
    src = out / "proto"
    with zipfile.ZipFile(JAR) as jar:
        for name in jar.namelist():
            # The service protos and the google/rpc ones they import (status.proto).
            if name in {f"proto/{p}" for p in PROTOS} or name == "google/rpc/status.proto":
                jar.extract(name, src)
    well_known = importlib.resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto
    args = ["protoc", f"-I{src / 'proto'}", f"-I{src}", f"-I{well_known}", f"--python_out={out}"]
    args += [f"--grpc_python_out={out}", *(str(src / "proto" / p) for p in PROTOS)]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTOS} from {JAR}")
    sys.path.insert(0, str(out))
    try:
        return {
            p.removesuffix(".proto"): (
                importlib.import_module(f"{p.removesuffix('.proto')}_pb2"),
                importlib.import_module(f"{p.removesuffix('.proto')}_pb2_grpc"),
            )
            for p in PROTOS
        }
    finally:
        sys.path.remove(str(out))


def bearer(tok: str | None) -> list[tuple[str, str]]:
    """gRPC metadata carrying a token the way TorchServe's GRPCInterceptor reads it."""
    return [("authorization", f"Bearer {tok}")] if tok is not None else []


def channel(port: int | str) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}")
