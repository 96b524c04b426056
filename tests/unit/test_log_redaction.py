"""URL passwords are masked wherever they appear, including at the end of a huge value and
after a character that cannot start a scheme; text without a URL comes back as it was."""

from __future__ import annotations

from orchestrator.observability.logs import redact_text


def test_passwords_in_urls_are_masked() -> None:
    text = "a redis://:pw@host, postgresql://u:secret@h/db, http://x.y/z and 1redis://u:p@h"
    assert redact_text(text) == (
        "a redis://:***@host, postgresql://u:***@h/db, http://x.y/z and 1redis://u:***@h"
    )


def test_a_url_at_the_end_of_a_huge_value_is_masked() -> None:
    value = "c" * 150_000 + " redis://:pw@host"
    assert redact_text(value) == "c" * 150_000 + " redis://:***@host"


def test_text_without_a_password_is_unchanged() -> None:
    for text in ("c" * 150_000, "x://u:" + "c" * 10_000, "a://" * 1_000, ""):
        assert redact_text(text) == text
