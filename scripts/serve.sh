#!/usr/bin/env bash
# Set everything up and serve on localhost at once. When models are missing, the training
# runs beside the server and the hot reload brings each model in as soon as it is exported
# (/readyz and the page say what is still training). Ctrl-C or SIGTERM stops both; running
# the script again resumes the training from its checkpoint.
#   HOST / PORT      where to listen (default 127.0.0.1:8000); other settings: app/settings.py
#   MODEL_DIR        models folder (default models)
#   DATA             training data (default ../shared/data when present, else downloaded)
#   EXTRAS           pip extras to install (default dev; "gpu" on a CUDA machine: both bring
#                    the server and training)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "${EXTRAS:-dev}"
export MODEL_DIR="${MODEL_DIR:-models}"

has_version() { compgen -G "$MODEL_DIR/$1/[0-9]*" > /dev/null; }
if has_version signs_classifier && has_version malaria_autoencoder && has_version malaria_index; then
  # The production server command: HOST, PORT and every limit come from app/settings.py.
  exec .venv/bin/python -m app
fi

data_args=()
if [ -n "${DATA:-}" ]; then
  data_args=(--data "$DATA")
elif [ -d ../shared/data ]; then
  data_args=(--data ../shared/data)
fi
echo "No trained models in $MODEL_DIR: serving now and training them beside the server."
mkdir -p "$MODEL_DIR"
.venv/bin/python -m training all "${data_args[@]}" --out "$MODEL_DIR" &
trainer=$!
.venv/bin/python -m app &
server=$!
stop() {
  trap - INT TERM EXIT
  kill -TERM "$trainer" "$server" 2> /dev/null || true
  wait "$trainer" "$server" 2> /dev/null || true
}
trap stop INT TERM EXIT
# Serve until the server exits; a finished (or failed) training run leaves it serving.
wait "$server"
