# Shared by scripts/up and scripts/test: install or start what a fresh Debian machine lacks, and do
# nothing that is already done, so a second run is fast.

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1
  fi
}

# Debian packages the stack and its tests use, by a program each provides.
ensure_packages() {
  local missing=() pair program package
  for pair in nats-server:nats-server dockerd:docker.io docker-registry:docker-registry \
              busybox:busybox-static git:git curl:curl; do
    program=${pair%%:*} package=${pair#*:}
    PATH="$PATH:/usr/sbin:/sbin" command -v "$program" >/dev/null 2>&1 || missing+=("$package")
  done
  # busybox-static specifically: a dynamically linked busybox cannot run in an empty image.
  if command -v busybox >/dev/null 2>&1 && ! file_is_static "$(command -v busybox)"; then missing+=(busybox-static); fi
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  export PATH="$PATH:/usr/sbin:/sbin"
}

file_is_static() { ! ldd "$1" >/dev/null 2>&1; }

# Where cargo puts what it builds: CARGO_TARGET_DIR, build.target-dir of a .cargo/config.toml, else
# ./target (cargo's own answer, as an absolute path).
target_dir() {
  local dir
  dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  printf '%s\n' "${dir:-${CARGO_TARGET_DIR:-$PWD/target}}"
}

ensure_rust() {
  command -v cargo >/dev/null 2>&1 && return 0
  [ -x "$HOME/.cargo/bin/cargo" ] && { export PATH="$HOME/.cargo/bin:$PATH"; return 0; }
  log "cargo is missing: install a Rust toolchain (1.85 or newer), e.g. with rustup"
  return 1
}

# A Docker engine: the one DOCKER_HOST or /var/run/docker.sock names, else one started here as Debian's
# docker.io runs on these machines (no iptables, no bridge, vfs storage).
ensure_dockerd() {
  if docker info >/dev/null 2>&1; then return 0; fi
  log "starting dockerd"
  local logfile=${ARTIFACTS_DOCKERD_LOG:-/tmp/artifacts-dockerd.log}
  as_root sh -c "nohup dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs >'$logfile' 2>&1 &"
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  log "dockerd did not start; see $logfile"
  return 1
}

# Images cannot be pulled here: make `busybox:latest` from the busybox-static binary.
ensure_base_image() {
  local made_by
  made_by=$(docker image inspect -f '{{ index .Config.Labels "artifacts.base" }}' busybox:latest 2>/dev/null || true)
  [ "$made_by" = "busybox-static-2" ] && return 0
  log "making the busybox:latest base image"
  local root
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp" "$root/etc"
  cp "$(command -v busybox)" "$root/bin/busybox"
  chmod 755 "$root"
  chmod 1777 "$root/tmp"
  local applet
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' -c 'CMD ["/bin/sh"]' \
    -c 'LABEL artifacts.base=busybox-static-2' - busybox:latest >/dev/null
  rm -rf "$root"
}

# The Python tools live in a virtual environment this script owns (target/python), and imports are checked
# from `/`: run from the repository, `import nats` would find the repository's own nats/ folder.
ensure_python_tools() {
  local venv=${ARTIFACTS_PYTHON_VENV:-$PWD/target/python}
  if ! (cd / && "$venv/bin/python" -c 'import nats, schemathesis, backports.tarfile, cryptography, spdx_tools') >/dev/null 2>&1; then
    if ! python3 -m venv --help >/dev/null 2>&1; then
      log "installing python3-venv"
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
    fi
    log "installing nats-py, schemathesis, backports.tarfile, cryptography and spdx-tools into $venv"
    python3 -m venv "$venv"
    # backports.tarfile: the archive oracle needs tarfile's data filter, which Debian 12's Python 3.11.2 lacks.
    # cryptography and spdx-tools check provenance envelopes and SBOMs with implementations no one here wrote.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check nats-py 'schemathesis>=4,<5' backports.tarfile \
      cryptography spdx-tools
  fi
  export PATH="$venv/bin:$PATH"
}

# skopeo: a registry client no one here wrote, for the registry's TLS tests.
ensure_test_clients() {
  if ! command -v skopeo >/dev/null 2>&1; then
    log "installing skopeo"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq skopeo >/dev/null
  fi
}

# Foreign architectures for the multi-architecture tests: QEMU user emulation registered with
# Headless Chromium and its WebDriver, which the dashboard's tests drive.
ensure_browser() {
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    log "installing chromium and chromium-driver"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
}

# binfmt_misc (the F flag, so containers can use it), and Debian's static busybox for arm64, unpacked to
# target/foreign/arm64/busybox (the tests make base images from it).
ensure_emulation() {
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    as_root mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || log "cannot mount binfmt_misc"
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    log "installing qemu-user-static and binfmt-support"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support >/dev/null
    # Without systemd the package's registration does not run by itself.
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || as_root update-binfmts --enable qemu-aarch64 || true
  fi
  local busybox=target/foreign/arm64/busybox
  if [ ! -x "$busybox" ]; then
    log "fetching busybox-static for arm64"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then as_root dpkg --add-architecture arm64; fi
    as_root apt-get update -qq
    local work
    work=$(mktemp -d)
    (cd "$work" && apt-get download -q busybox-static:arm64 >/dev/null)
    dpkg-deb -x "$work"/busybox-static_*_arm64.deb "$work/root"
    mkdir -p "$(dirname "$busybox")"
    cp "$work/root/bin/busybox" "$busybox"
    rm -rf "$work"
  fi
}
