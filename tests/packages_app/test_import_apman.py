"""python manage.py import_apman: ApMan configs become packages."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from packages_app.models import Package

CONFIG = {
    "id": "churn",
    "description": "Churn model",
    "timeout": 600,
    "command": "venv/bin/python score.py --model 'churn v2'",
    "parameters": {"days": 7},
    "notify-success": True,
    "notification-emails": ["ops@example.com", "data@example.com"],
}


def write_config(folder: Path, config: dict | str, name: str = "config.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    return path


def import_apman(*args: str) -> str:
    out = io.StringIO()
    call_command("import_apman", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_it_creates_a_package_from_a_config_file(db, tmp_path):
    path = write_config(tmp_path / "churn", CONFIG)
    out = import_apman(str(path))
    assert out.startswith("created churn")
    package = Package.objects.get(slug="churn")
    assert package.description == "Churn model"
    assert package.timeout == 600
    assert package.command == ["venv/bin/python", "score.py", "--model", "churn v2"]
    assert package.parameters == {"days": 7}
    assert package.notify_success is True
    assert package.recipients == ["ops@example.com", "data@example.com"]
    assert package.directory == str(tmp_path / "churn")


def test_it_finds_the_config_in_a_package_folder(db, tmp_path):
    folder = tmp_path / "churn"
    write_config(folder, {**CONFIG, "id": "churn"}, name="churn.json")
    (folder / "notes.txt").write_text("not a config")
    out = import_apman(str(folder))
    assert out.startswith("created churn")
    assert Package.objects.get().directory == str(folder)


def test_it_prefers_config_json_in_a_folder(db, tmp_path):
    folder = tmp_path / "churn"
    write_config(folder, CONFIG)
    write_config(folder, {**CONFIG, "id": "other"}, name="other.json")
    import_apman(str(folder))
    assert list(Package.objects.values_list("slug", flat=True)) == ["churn"]


def test_it_updates_and_keeps_what_the_config_does_not_mention(db, tmp_path):
    path = write_config(tmp_path / "churn", CONFIG)
    import_apman(str(path))
    Package.objects.filter(slug="churn").update(schedule="0 3 * * *", max_retries=2)
    write_config(
        tmp_path / "churn",
        {"id": "churn", "description": "v3", "timeout": 900, "command": "run.sh"},
    )
    out = import_apman(str(path), "--directory", "/opt/packages/churn")
    assert out.startswith("updated churn")
    package = Package.objects.get()
    assert package.description == "v3"
    assert package.timeout == 900
    assert package.command == ["run.sh"]
    assert package.directory == "/opt/packages/churn"
    # set in the admin, not in ApMan's config: a re-import keeps them
    assert package.schedule == "0 3 * * *"
    assert package.max_retries == 2
    assert package.parameters == {"days": 7}
    assert package.recipients == ["ops@example.com", "data@example.com"]


def test_it_reports_invalid_json_with_its_position(db, tmp_path):
    path = write_config(tmp_path, '{\n  "id": "churn",\n  "timeout": 60,,\n}')
    with pytest.raises(CommandError) as excinfo:
        import_apman(str(path))
    message = str(excinfo.value)
    assert str(path) in message
    assert "line 3, column 17" in message
    assert not Package.objects.exists()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"timeout": None}, "'timeout'"),
        ({"timeout": "60"}, "'timeout'"),
        ({"timeout": 0}, "'timeout'"),
        ({"parameters": ["days", 7]}, "'parameters'"),
        ({"notification-emails": "ops@example.com"}, "'notification-emails'"),
        ({"notification-emails": ["not an address"]}, "'notification-emails'"),
        ({"command": "python 'unclosed"}, "'command'"),
    ],
)
def test_it_names_the_key_in_error(db, tmp_path, change, key):
    config = {**CONFIG, **change}
    config = {k: v for k, v in config.items() if v is not None}
    path = write_config(tmp_path, config)
    with pytest.raises(CommandError) as excinfo:
        import_apman(str(path))
    assert key in str(excinfo.value)
    assert not Package.objects.exists()


def test_it_reports_model_validation_in_one_line(db, tmp_path, settings):
    path = write_config(tmp_path, {**CONFIG, "id": "churn model"})
    with pytest.raises(CommandError) as excinfo:
        import_apman(str(path))
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: id: ")
    assert not Package.objects.exists()


def test_it_refuses_a_folder_without_a_single_config(db, tmp_path):
    write_config(tmp_path, CONFIG, name="a.json")
    write_config(tmp_path, CONFIG, name="b.json")
    with pytest.raises(CommandError, match=r"found: a\.json, b\.json"):
        import_apman(str(tmp_path))
