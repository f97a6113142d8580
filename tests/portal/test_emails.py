"""Templated email (text + HTML) through Django's mail backend."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from portal import emails


def test_it_sends_text_and_html(mailoutbox, settings):
    settings.SITE_URL = "https://ops.example"
    emails.send(
        "test",
        ["ops@example.com"],
        {"requested_by": "ana", "from_email": "x", "backend": "y"},
    )
    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert message.subject == "[Ops Portal] Test email from https://ops.example"
    assert message.to == ["ops@example.com"]
    assert message.from_email == settings.DEFAULT_FROM_EMAIL
    assert "requested by ana" in message.body
    html, mimetype = message.alternatives[0]
    assert mimetype == "text/html"
    assert "<strong>ana</strong>" in html
    assert 'href="https://ops.example/admin/"' in html


def test_it_escapes_html_but_not_text(mailoutbox):
    emails.send(
        "test",
        ["a@example.com"],
        {"requested_by": "<script>", "from_email": "", "backend": ""},
    )
    assert "<script>" in mailoutbox[0].body
    assert "&lt;script&gt;" in mailoutbox[0].alternatives[0][0]


def test_it_needs_a_recipient(mailoutbox):
    with pytest.raises(ValueError, match="at least one recipient"):
        emails.send("test", ["", ""], {})
    assert mailoutbox == []


def test_command_sends_a_test_email(mailoutbox):
    out = io.StringIO()
    call_command("send_test_email", "ops@example.com", stdout=out)
    assert mailoutbox[0].to == ["ops@example.com"]
    assert "Test email sent to ops@example.com." in out.getvalue()


def test_command_rejects_a_bad_address(mailoutbox):
    with pytest.raises(CommandError, match=r"^Not an email address: 'nope'$"):
        call_command("send_test_email", "nope")
    assert mailoutbox == []
