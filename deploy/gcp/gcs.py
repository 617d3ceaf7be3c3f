"""Datasets, artifacts and the model store on Google Cloud Storage (gs:// URIs).

Usage:
  python -m deploy.gcp.gcs push LOCAL gs://BUCKET/PREFIX     a file or folder tree (links followed)
  python -m deploy.gcp.gcs pull gs://BUCKET/PREFIX LOCAL     every object under the prefix
  python -m deploy.gcp.gcs push-models gs://BUCKET/models/TAG [--store DIR] [--models A,B]
      the .mar files and a config.properties in the layout KServe's TorchServe runtime reads:
      TAG/config/config.properties and TAG/model-store/<name>.mar

Credentials are Application Default Credentials (Cloud Build, Vertex AI and GKE supply them);
with STORAGE_EMULATOR_HOST set, the client talks to that emulator instead, without credentials.
"""

import argparse
import base64
import hashlib
from pathlib import Path, PurePosixPath
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[2]
# Where KServe's storage initializer puts storageUri's objects in the predictor container.
KSERVE_MODEL_ROOT = "/mnt/models"


def split_uri(uri: str) -> tuple[str, str]:
    """gs://bucket/some/prefix -> ("bucket", "some/prefix") (prefix without slashes at the ends)."""
    if not uri.startswith("gs://"):
        raise ValueError(f"{uri!r} is not a gs:// URI")
    bucket, _, prefix = uri[len("gs://") :].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    return bucket, prefix.strip("/")


def join(prefix: str, *parts: str) -> str:
    """An object name under a prefix."""
    return str(PurePosixPath(prefix, *parts)) if prefix else str(PurePosixPath(*parts))


def client(project: Optional[str] = None) -> Any:
    """A google.cloud.storage client (imported here: only the GCP paths need the package)."""
    from google.cloud import storage

    return storage.Client(project=project)


def md5_b64(path: Path) -> str:
    """The base64 MD5 that GCS reports as an object's md5Hash."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode()


def upload(gcs: Any, path: Path, uri: str) -> str:
    """Uploads one file unless the object already has its MD5; returns the object's gs:// URI."""
    bucket_name, name = split_uri(uri)
    bucket = gcs.bucket(bucket_name)
    local = md5_b64(path)
    existing = bucket.get_blob(name)
    if existing is not None and existing.md5_hash == local:
        return uri
    blob = bucket.blob(name)
    blob.upload_from_filename(str(path))
    blob.reload()
    if blob.md5_hash != local:
        raise OSError(f"{uri}: uploaded MD5 {blob.md5_hash} != local {local}")
    return uri


def push(local: Path, uri: str, gcs: Any = None) -> list[str]:
    """Copies a file, or every file under a folder (symlinks followed), to uri; returns the URIs."""
    gcs = gcs or client()
    local = Path(local)
    if local.is_file():
        return [upload(gcs, local, uri)]
    if not local.is_dir():
        raise FileNotFoundError(local)
    bucket, prefix = split_uri(uri)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    return [
        upload(gcs, p, f"gs://{bucket}/{join(prefix, p.relative_to(local).as_posix())}")
        for p in files
    ]


def pull(uri: str, local: Path, gcs: Any = None) -> list[Path]:
    """Downloads every object under uri into local, keeping relative paths; returns the files."""
    gcs = gcs or client()
    bucket, prefix = split_uri(uri)
    local = Path(local)
    base = f"{prefix}/" if prefix else ""
    got = []
    for blob in gcs.list_blobs(bucket, prefix=base):
        rel = PurePosixPath(blob.name[len(base) :])
        if not rel.parts or blob.name.endswith("/"):
            continue  # folder placeholder objects
        if ".." in rel.parts or rel.is_absolute():
            raise ValueError(f"refusing object name {blob.name!r}: it leaves {local}")
        dst = local.joinpath(*rel.parts)
        dst.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(dst))
        got.append(dst)
    if not got:
        raise FileNotFoundError(f"no objects under {uri}")
    return got


def kserve_config(base: str, model_root: str = KSERVE_MODEL_ROOT) -> str:
    """config.properties for the model store's KServe layout: the bundle's own settings with
    model_store and allowed_urls pointing at <model_root>/model-store. The container's
    entrypoint sets the listeners, ports and token setting from its environment."""
    store = f"{model_root}/model-store"
    overrides = {
        "model_store": store,
        "allowed_urls": f"^file://{store}/[A-Za-z0-9_.-]+\\\\.mar$",
    }
    lines = []
    for line in base.splitlines():
        key = line.split("=", 1)[0].strip()
        if not line.lstrip().startswith("#") and key in overrides:
            line = f"{key}={overrides.pop(key)}"
        lines.append(line)
    lines += [f"{k}={v}" for k, v in overrides.items()]
    return "\n".join(lines) + "\n"


def push_models(
    uri: str,
    store: Path = ROOT / "model_store",
    config: Path = ROOT / "config.properties",
    models: Optional[list[str]] = None,
    gcs: Any = None,
) -> list[str]:
    """Pushes .mar files (all in the store, or `models`) and the KServe config.properties."""
    gcs = gcs or client()
    names = models or sorted(p.stem for p in Path(store).glob("*.mar"))
    if not names:
        raise FileNotFoundError(f"no .mar files in {store}: run `make archive` first")
    bucket, prefix = split_uri(uri)
    pushed = []
    for name in names:
        mar = Path(store) / f"{name}.mar"
        if not mar.is_file():
            raise FileNotFoundError(mar)
        pushed.append(upload(gcs, mar, f"gs://{bucket}/{join(prefix, 'model-store', mar.name)}"))
    blob = gcs.bucket(bucket).blob(join(prefix, "config", "config.properties"))
    blob.upload_from_string(kserve_config(Path(config).read_text()), content_type="text/plain")
    pushed.append(f"gs://{bucket}/{blob.name}")
    return pushed


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_push = sub.add_parser("push", help="upload a file or folder")
    p_push.add_argument("local", type=Path)
    p_push.add_argument("uri")
    p_pull = sub.add_parser("pull", help="download a prefix")
    p_pull.add_argument("uri")
    p_pull.add_argument("local", type=Path)
    p_models = sub.add_parser("push-models", help="upload .mar files in KServe's layout")
    p_models.add_argument("uri")
    p_models.add_argument("--store", type=Path, default=ROOT / "model_store")
    p_models.add_argument("--config", type=Path, default=ROOT / "config.properties")
    p_models.add_argument("--models", help="comma-separated names (default: every .mar)")
    args = parser.parse_args(argv)
    if args.cmd == "push":
        done = push(args.local, args.uri)
    elif args.cmd == "pull":
        done = [str(p) for p in pull(args.uri, args.local)]
    else:
        models = args.models.split(",") if args.models else None
        done = push_models(args.uri, args.store, args.config, models)
    print(f"{len(done)} file(s): " + " ".join(done[:5]) + (" ..." if len(done) > 5 else ""))


if __name__ == "__main__":
    main()
