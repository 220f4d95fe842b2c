#!/usr/bin/env bash
# `make rpm`: a source tarball of the working tree, then rpmbuild -ba in a private topdir.
#   packaging/rpm/make-rpm.sh [TOPDIR]    (default build/rpm; RPMs in TOPDIR/RPMS/<arch>/)
#   RPMBUILD_ARGS="--without slurm" ...   extra rpmbuild arguments
# The tarball holds every tracked file and every untracked file git does not ignore (so
# uncommitted work is packaged, unlike `git archive HEAD`), plus the generated man/drccli.1
# and man/drc.1.
set -euo pipefail
cd "$(dirname "$0")/../.."

spec=packaging/rpm/drc.spec
top=$(realpath -m "${1:-build/rpm}")
version=$(sed -n 's/^Version: *//p' "$spec")
name=drc-$version

command -v rpmbuild >/dev/null || { echo "make rpm: rpmbuild not found (install rpm)" >&2; exit 1; }
git rev-parse --show-toplevel >/dev/null 2>&1 \
    || { echo "make rpm: needs a git checkout to list the source files" >&2; exit 1; }
for page in man/drccli.1 man/drc.1; do
    [ -f "$page" ] || { echo "make rpm: $page missing: run make man" >&2; exit 1; }
done

rm -rf "$top"
mkdir -p "$top/SOURCES" "$top/SPECS"
{
    git ls-files -z --cached --others --exclude-standard
    printf '%s\0' man/drccli.1 man/drc.1
} | while IFS= read -r -d '' f; do
    [ -f "$f" ] && printf '%s\0' "$f"   # a file deleted in the tree but not yet in git
done | sort -zu | tar --null -T - --transform "s,^,$name/," --owner=0 --group=0 \
    -czf "$top/SOURCES/$name.tar.gz"
cp "$spec" "$top/SPECS/"

# On a distribution whose packages are not RPMs (Debian) the build dependencies are not in the
# rpm database: check nothing there. Debian's brp-compress needs bash, not its /bin/sh.
# Debian 13's rpm makes a -debuginfo package by default (find-debuginfo wants file and
# eu-strip): not there, as on Debian 12.
nodeps=()
if ! rpm -q --quiet --whatprovides python3 2>/dev/null; then
    nodeps=(--nodeps --define '__brp_compress bash %{_rpmconfigdir}/brp-compress %{?_prefix}'
        --define 'debug_package %{nil}')
fi
# shellcheck disable=SC2086  # RPMBUILD_ARGS is a list of words on purpose
rpmbuild -ba --quiet --define "_topdir $top" "${nodeps[@]}" ${RPMBUILD_ARGS:-} \
    "$top/SPECS/drc.spec"
find "$top/RPMS" "$top/SRPMS" -name '*.rpm' -printf '%P\n' | sort
