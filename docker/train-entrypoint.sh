#!/bin/sh
# Training image entrypoint (Vertex AI custom job, docs/deploy.md): data from GCS, one
# experiment trained and exported, its artifacts and .mar pushed back to GCS.
#   EXPERIMENT      experiment to train (required): cora_gcn, mutag_gcn, ...
#   DATA_URI        gs://BUCKET/data, a copy of the data mirror (optional: else the dataset's
#                   own download, when the job has internet access)
#   ARTIFACTS_URI   where the artifacts go (gs://BUCKET/artifacts: <experiment>/ under it);
#                   else AIP_MODEL_DIR, which Vertex AI sets from baseOutputDirectory
#                   (neither: the artifacts stay in the container)
#   MODEL_STORE_URI gs://BUCKET/models/TAG: also build <experiment>.mar and push it there
#   DVC_REMOTE      gs://BUCKET/dvc: train in dvc.yaml's layout (data/, artifacts/ under /app),
#                   record the run and push it to this DVC remote (train/store.py), where
#                   cloudbuild.yaml pulls it; not with extra arguments (no run of dvc.yaml)
#   arguments       extra Hydra overrides, e.g. trainer.max_epochs=50
set -eu
: "${EXPERIMENT:?set EXPERIMENT to the experiment to train}"
if [ -n "${DATA_URI:-}" ]; then
  python -m deploy.gcp.gcs pull "$DATA_URI" /tmp/mirror
  export DATA_MIRROR=/tmp/mirror
fi
if [ -n "${DVC_REMOTE:-}" ] && [ $# -eq 0 ]; then
  export DATA_DIR=/app/data ARTIFACTS_DIR=/app/artifacts
  dvc config --local core.no_scm true
  dvc remote add --local --default --force store "$DVC_REMOTE"
  python -m train.core.prepare
fi
python -m train experiment="$EXPERIMENT" "$@"
if [ -n "${DVC_REMOTE:-}" ] && [ $# -eq 0 ]; then
  python -m train.store push "$EXPERIMENT"
fi
out=${ARTIFACTS_URI:-${AIP_MODEL_DIR:-}}
if [ -n "$out" ]; then
  python -m deploy.gcp.gcs push "$ARTIFACTS_DIR/$EXPERIMENT" "${out%/}/$EXPERIMENT"
fi
if [ -n "${MODEL_STORE_URI:-}" ]; then
  python -m serve build "$EXPERIMENT" --artifacts "$ARTIFACTS_DIR" --export-path /tmp/model_store
  python -m deploy.gcp.gcs push-models "$MODEL_STORE_URI" --store /tmp/model_store --models "$EXPERIMENT"
fi
