"""What drc-embedded says when its private munged does not start: the log munged wrote, never
a log file that does not exist. A real munged, refusing a key too short before it opens its
log file."""

from __future__ import annotations

from pathlib import Path

import pytest

from drc.embedded.munged import start_private_munged


def test_a_munged_that_fails_before_its_log_exists_is_reported_from_what_it_printed(
    tmp_path: Path,
) -> None:
    home = tmp_path / "munge"
    home.mkdir(mode=0o711)
    (home / "munge.key").write_bytes(b"short")  # munged wants 32 bytes at least
    with pytest.raises(RuntimeError) as failed:
        start_private_munged(home, timeout=10.0)
    message = str(failed.value)
    assert not (home / "munged.log").exists()
    assert "munged.log" not in message, message
    assert f"{home / 'munged.out'} ends:" in message, message
    assert "Keyfile must be at least 32 bytes" in message, message
