#!/usr/bin/env bash
# scripts/install-deps.sh: installs the Debian/Ubuntu packages zerotrain builds and tests with,
# skipping apt entirely when every one is already installed (checked with dpkg-query), so that it
# costs nothing on a prepared machine and needs no network there.
# Used by scripts/test.sh, scripts/run.sh and .ci/run. Runs apt as root, or through sudo.
# The CUDA toolkit, cuDNN and NCCL are not installed here: they come with the machine (the build
# enables the CUDA backend when it finds them, see cmake/ZtCuda.cmake).
set -euo pipefail

packages=(
  build-essential cmake ninja-build
  libeigen3-dev libyaml-cpp-dev libopenmpi-dev openmpi-bin
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libfmt-dev
  python3-torch python3-numpy libopenblas0-pthread
  libxxhash-dev python3-pip
  liburing-dev
  slurm-wlm munge  # tests/slurm: a one-node Slurm cluster runs slurm/train-cpu.sbatch
)

# Python packages Debian does not ship, installed with pip into Debian's python (/usr/bin/python3, the
# one the tests run): safetensors (tests/io/test_safetensors_read.py reads checkpoint shards with it),
# tensorboard (tests/io/test_tensorboard_reader.py reads the monitor's event files with it).
pip_packages=(safetensors tensorboard)
install_pip_packages() {
  local need=() p
  for p in "${pip_packages[@]}"; do
    /usr/bin/python3 -c "import $p" 2>/dev/null || need+=("$p")
  done
  ((${#need[@]} == 0)) && return 0
  echo "install-deps: pip installing ${need[*]} into /usr/bin/python3"
  local su=()
  ((EUID == 0)) || su=(sudo)
  "${su[@]}" /usr/bin/python3 -m pip install --quiet --root-user-action=ignore --break-system-packages "${need[@]}"
}

missing=()
for p in "${packages[@]}"; do
  if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != installed ]]; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages already installed"
  install_pip_packages
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=()
if ((EUID != 0)); then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
install_pip_packages
