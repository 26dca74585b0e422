#!/usr/bin/env bash
# Installs every Debian 12 package Turnpike needs to build, test and benchmark.
# Idempotent: only missing packages are installed. Run as root (or with sudo available).
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config clang-format git
  # libraries (docs/dependencies.md says why each is here)
  libboost1.81-dev libboost-url1.81-dev libssl-dev libyaml-cpp-dev libspdlog-dev libfmt-dev
  nlohmann-json3-dev libre2-dev libnghttp2-dev libhiredis-dev libcrypt-dev libc-ares-dev
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  # test and benchmark peers
  curl python3 procps wrk nginx-light nghttp2-client python3-h2 python3-hyperframe
  python3-grpcio python3-protobuf python3-websockets redis-server python3-jwt python3-cryptography
  python3-bcrypt grpc-proto protobuf-compiler dnsmasq-base
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
