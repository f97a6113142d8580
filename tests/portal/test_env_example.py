"""Every variable the settings read is documented in .env.example."""

from __future__ import annotations

import re

from tests.fixtures.processes import ROOT


def test_every_setting_variable_is_in_env_example():
    settings_src = (ROOT / "portal" / "settings.py").read_text()
    read = set(
        re.findall(
            r'env\.(?:str|bool|int|list|choice)\(\s*"([A-Z0-9_]+)"', settings_src
        )
    )
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert read, "no variables found: did the settings helpers change name?"
    assert sorted(read - documented) == []
    # and each documented variable has a comment line right above it
    lines = example.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z0-9_]+=", line):
            above = lines[i - 1]
            assert above.startswith("#") or re.match(r"^[A-Z0-9_]+=", above), line
