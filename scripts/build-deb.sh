#!/usr/bin/env bash
# Build exmilter's Debian package with Debian's own tools from a clean copy of this tree.
#
#     bash scripts/build-deb.sh [OUTDIR]        (default OUTDIR: dist/)
#
# Copies the files git knows (tracked, and new ones not ignored: no .venv, no caches) into
# a temporary directory, runs dpkg-buildpackage -b there (debhelper, dh-python/pybuild),
# then lintian on the result, and leaves exmilter_VERSION_all.deb in OUTDIR. Needs the
# build tools: bash scripts/install.sh installs them (debhelper dh-python
# pybuild-plugin-pyproject python3-all python3-setuptools python3-wheel lintian), or
#     apt-get install --no-install-recommends debhelper dh-python pybuild-plugin-pyproject \
#         python3-all python3-setuptools python3-wheel lintian
# Exit status: 0 built and lintian clean, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)

for tool in dpkg-buildpackage dh lintian; do
    command -v "$tool" >/dev/null || { echo "build-deb.sh: $tool is missing (see the comment at the top)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src="$work/exmilter"
mkdir "$src"
# A clean tree: what git tracks or would track, nothing built, nothing ignored.
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] || [ -L "$f" ] || continue        # deleted in the work tree
    mkdir -p "$src/$(dirname "$f")"
    cp -P "$f" "$src/$f"
done

# Debian's Python and tools only (not a pyenv or venv python3 that may come first in PATH).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
(cd "$src" && dpkg-buildpackage -b -us -uc --no-sign >"$work/build.log" 2>&1) || {
    tail -40 "$work/build.log" >&2
    echo "build-deb.sh: dpkg-buildpackage failed (log above)" >&2
    exit 1
}
deb=$(ls "$work"/exmilter_*_all.deb)
cp "$deb" "$out/"
echo "built $out/$(basename "$deb")"
# lintian: no error, no warning (informational tags are not failures)
if ! lintian --fail-on error,warning "$out/$(basename "$deb")"; then
    echo "build-deb.sh: lintian is not clean" >&2
    exit 1
fi
