"""lib/drc_errors.h is generated from drc/core/errors.py (issue 14): the committed file must be
what the generator writes now. Changing a code or message without `make errors` fails here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from clib.support import LIB

from drc.core.errors import MESSAGES, Code


def generator():
    spec = importlib.util.spec_from_file_location("gen_errors", LIB / "gen_errors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_error_table_is_what_the_generator_writes(tmp_path: Path) -> None:
    assert generator().main(str(tmp_path)) == 0
    written = (tmp_path / "drc_errors.h").read_text()
    assert written == (LIB / "drc_errors.h").read_text(), "run `make errors` and commit"


def test_error_table_names_every_code_and_message() -> None:
    text = (LIB / "drc_errors.h").read_text()
    for code in Code:
        assert f'[{code.drc_name}] = "{code.name}",' in text
        assert f"[{code.drc_name}] = {generator().c_string(MESSAGES[code])}," in text


def test_c_string_escapes_what_c_would_misread() -> None:
    assert generator().c_string('a "b" \\ é\n') == '"a \\"b\\" \\\\ \\303\\251\\012"'


def test_no_c_file_keeps_its_own_error_names() -> None:
    """The table lives in the generated header only: no hand-written copy next to it."""
    sources = [*LIB.glob("*.c"), *(LIB.parent / "plugins" / "spank").glob("*.[ch]")]
    for source in sources:
        text = source.read_text()
        assert '"CRED_EXTERNAL_FAILURE"' not in text, f"{source.name} spells out error names"
        assert MESSAGES[Code.EBADTARGET] not in text, f"{source.name} copies the messages"
