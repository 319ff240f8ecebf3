# Sourced on the device machine: carried wheels on PYTHONPATH, repo sources importable.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .gpu/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD/compiler:$PWD/host:$PWD/agent:$PWD/gateway:$PWD/cli:$PWD/tests:$PWD
export PYTHONUNBUFFERED=1
