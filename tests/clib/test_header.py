"""rdmacred.h and the build: numbering equal to the Python core, pkg-config (in-tree and
installed), the soname, and a header that leaves ``drc_strerror`` to the client."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from clib.support import LIB, VALGRIND, CLib, pkg_config

from drc.core.errors import MESSAGES, Code
from drc.core.model import Flags

HEADER = LIB / "rdmacred.h"


def _program(tmp: Path, clib: CLib, body: str, name: str) -> subprocess.CompletedProcess[str]:
    source = tmp / f"{name}.c"
    source.write_text(
        "#include <stdio.h>\n#include <rdmacred.h>\n"
        'static const char *drc_strerror(int e) { return e ? "error" : "ok"; }\n'
        f"int main(void)\n{{\n(void)drc_strerror;\n{body}return 0;\n}}\n"
    )
    binary = clib.compile(source, name, "-Wextra", "-std=c99", "-pedantic")
    return subprocess.run([binary], env=clib.env(), capture_output=True, text=True, check=True)


def _c_names(kind: str) -> set[str]:
    text = HEADER.read_text()
    if kind == "codes":
        return set(re.findall(r"^\s*(DRC_[A-Z_]+)\s*=", text, re.M))
    return set(re.findall(r"^#define\s+(DRC_FLAGS_[A-Z_]+)\s", text, re.M))


def test_error_codes_match_python(clib: CLib, tmp_path: Path):
    assert _c_names("codes") == {c.drc_name for c in Code}
    body = "".join(
        f'printf("%d|%s\\n", {c.drc_name}, drc_error_message(-{c.drc_name}));\n' for c in Code
    )
    lines = _program(tmp_path, clib, body, "codes").stdout.splitlines()
    assert lines == [f"{int(c)}|{MESSAGES[c]}" for c in Code]


def test_flags_match_python(clib: CLib, tmp_path: Path):
    flags = [f for f in Flags if f.name != "NONE"]
    assert _c_names("flags") == {f"DRC_FLAGS_{f.name}" for f in flags}
    body = "".join(f'printf("%d\\n", DRC_FLAGS_{f.name});\n' for f in flags)
    assert _program(tmp_path, clib, body, "flags").stdout.split() == [str(int(f)) for f in flags]


def test_error_message_takes_either_sign_and_never_null(clib: CLib, tmp_path: Path):
    body = (
        'printf("%s|%s|%s|%s\\n", drc_error_message(DRC_EPERM), drc_error_message(-DRC_EPERM),'
        " drc_error_message(12345), drc_error_message(-2147483647 - 1));\n"
    )
    out = _program(tmp_path, clib, body, "messages").stdout.strip().split("|")
    assert out == [MESSAGES[Code.EPERM]] * 2 + ["unknown DRC error"] * 2


def test_accessors_accept_null(clib: CLib, tmp_path: Path):
    body = (
        'printf("%u %u %u %d %d\\n", drc_get_first_cookie(NULL), drc_get_second_cookie(NULL),'
        " drc_get_ptag(NULL), drc_release_local(NULL), drc_acquire(NULL, 0));\n"
    )
    assert _program(tmp_path, clib, body, "nulls").stdout.split() == ["0", "0", "0", "-12", "-12"]


def test_pkg_config_in_tree_and_installed(clib: CLib):
    build = LIB / "build"
    assert pkg_config(build, "--cflags", "--libs") == [f"-I{LIB}", f"-L{build}", "-ldrc"]
    prefix = clib.prefix
    assert pkg_config(clib.pc_dir, "--cflags", "--libs") == [
        f"-I{prefix}/include",
        f"-L{prefix}/lib",
        "-ldrc",
    ]
    assert (prefix / "include" / "rdmacred.h").read_bytes() == HEADER.read_bytes()
    assert (prefix / "share" / "man" / "man3" / "rdmacred.3").is_file()


def test_soname_and_exports(clib: CLib):
    lib = clib.prefix / "lib"
    assert (lib / "libdrc.so").resolve() == (lib / "libdrc.so.1").resolve()
    dynamic = subprocess.run(
        ["readelf", "-d", "--dyn-syms", "-W", str(lib / "libdrc.so.1")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Library soname: [libdrc.so.1]" in dynamic
    exported = set(re.findall(r"FUNC\s+GLOBAL\s+DEFAULT\s+\d+\s+(\w+)", dynamic))
    declared = set(re.findall(r"^\S.*?\b(drc_\w+)\(", HEADER.read_text(), re.M))
    assert exported == declared  # nothing internal leaks into the ABI
    assert "drc_strerror" not in HEADER.read_text()


def test_valgrind_catches_a_leak(clib: CLib, tmp_path: Path):
    """The valgrind invocation of test_client can fail: it flags this program."""
    source = tmp_path / "leak.c"
    source.write_text(
        "#include <stdlib.h>\n#include <rdmacred.h>\n"
        "int main(void) { drc_info_handle_t *p = malloc(64); p[0] = 0;"
        " return drc_get_ptag(p[0]) != 0; }\n"
    )
    binary = clib.compile(source, "leak")
    result = subprocess.run([*VALGRIND, str(binary)], env=clib.env(), capture_output=True)
    assert result.returncode == 99, result.stderr


def _strict(tmp: Path, clib: CLib, compiler: str, suffix: str, *std: str) -> None:
    """Compile and link a program using every declaration of the header under a strict old
    standard; any warning fails (a trailing enum comma is one under C89 and C++98)."""
    source = tmp / f"strict.{suffix}"
    source.write_text(
        "#include <rdmacred.h>\n"
        "int main(void)\n{\n"
        "\tdrc_info_handle_t info = 0;\n"
        "\tuint32_t credential = 0;\n"
        "\tdrc_status_t status = DRC_EPROTO;\n"
        "\tint rc = drc_acquire(&credential, DRC_FLAGS_FLEX_CREDENTIAL);\n"
        "\t(void)status;\n"
        "\t(void)drc_error_message(rc);\n"
        "\t(void)drc_error_detail();\n"
        "\treturn (int)(drc_get_ptag(info) + drc_get_wlm_id()) & 0;\n"
        "}\n"
    )
    flags = pkg_config(clib.pc_dir, "--cflags", "--libs")
    argv = [compiler, *std, "-pedantic", "-Wall", "-Wextra", "-Werror", "-o", str(tmp / suffix)]
    result = subprocess.run([*argv, str(source), *flags], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_header_is_c89_pedantic(clib: CLib, tmp_path: Path):
    _strict(tmp_path, clib, "cc", "c", "-std=c89")


def test_header_is_cxx98_pedantic(clib: CLib, tmp_path: Path):
    _strict(tmp_path, clib, "g++", "cc", "-std=c++98")


def test_strict_check_fails_on_a_trailing_enum_comma(tmp_path: Path):
    """The check above can fail: the old header (trailing comma) is refused under C89."""
    (tmp_path / "old.h").write_text("enum e { A = 0, B = 1, };\n")
    (tmp_path / "use.c").write_text('#include "old.h"\nint main(void) { return A; }\n')
    result = subprocess.run(
        ["cc", "-std=c89", "-pedantic", "-Werror", "-c", "-o", str(tmp_path / "use.o"),
         str(tmp_path / "use.c")],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode != 0 and "comma" in result.stderr


def test_error_detail_is_per_thread(clib: CLib, tmp_path: Path):
    """Each thread reads the reason for its own last failure; a new thread has none."""
    source = tmp_path / "detail.c"
    source.write_text(
        "#include <pthread.h>\n#include <stdio.h>\n#include <rdmacred.h>\n"
        "static void *other(void *arg)\n{\n"
        '\tprintf("new:[%s]\\n", drc_error_detail());\n'
        "\tif (arg)\n\t\tdrc_release_local(NULL);\n"
        '\tprintf("thread:%s\\n", drc_error_detail());\n'
        "\treturn NULL;\n}\n"
        "int main(void)\n{\n\tpthread_t t;\n"
        '\tprintf("start:[%s]\\n", drc_error_detail());\n'
        '\tprintf("rc:%d\\n", drc_acquire(NULL, 0));\n'
        '\tpthread_create(&t, NULL, other, "x");\n\tpthread_join(t, NULL);\n'
        '\tprintf("main:%s\\n", drc_error_detail());\n'
        "\treturn 0;\n}\n"
    )
    binary = clib.compile(source, "detail", "-pthread")
    result = subprocess.run([*VALGRIND, str(binary)], env=clib.env(), capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [
        "start:[]",
        "rc:-12",
        "new:[]",
        "thread:drc_release_local: info is NULL",
        "main:drc_acquire: credential is NULL",
    ]
