"""services.xml and query-profile parsing; refusal of packages outside the subset (spec §1, §7)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vespa_app.engine.services import PackageError, load_query_profile, load_services

from .conftest import DOCS_PACKAGE, PROJECT_PACKAGE, ROOT, free_port

COMPONENT = "\n        <component id='x' class='com.example.X'/>"
ABORT = "<abortondocumenterror>true</abortondocumenterror>"


def copy_package(tmp_path: Path) -> Path:
    target = tmp_path / "package"
    shutil.copytree(DOCS_PACKAGE, target)
    return target


def test_project_package_services_and_query_profile() -> None:
    services = load_services(PROJECT_PACKAGE)
    assert services.search and services.document_api and not services.ignore_undefined_fields
    assert services.document_types == {"product": "shop", "user": "shop", "seller": "shop"}
    assert load_query_profile(PROJECT_PACKAGE) == {"maxHits": "500", "maxOffset": "1000"}


@pytest.mark.parametrize(
    ("old", "new", "line", "construct"),
    [
        ("<search/>", f"<search/>{COMPONENT}", 7, "component"),
        ('"user" mode="index"', '"user" mode="streaming"', 16, 'mode="streaming"'),
        ("<document-api/>", f"<document-api>{ABORT}</document-api>", 7,
         "<document-api><abortondocumenterror>"),
        ("<min-redundancy>1</min-redundancy>", "<tuning/>", 13, "tuning"),
    ],
)  # fmt: skip
def test_unsupported_services_constructs_are_refused(
    tmp_path: Path, old: str, new: str, line: int, construct: str
) -> None:
    package = copy_package(tmp_path)
    path = package / "services.xml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(PackageError) as err:
        load_services(package)
    assert str(err.value) == f"{path}:{line}: unsupported construct '{construct}'"


def test_query_profile_refuses_unknown_fields(tmp_path: Path) -> None:
    package = copy_package(tmp_path)
    path = package / "search" / "query-profiles" / "default.xml"
    path.write_text(
        '<query-profile id="default">\n'
        '  <field name="ranking.sorting">price</field>\n'
        "</query-profile>\n"
    )
    with pytest.raises(
        PackageError, match=r"default.xml:2: unsupported construct 'query profile field"
    ):
        load_query_profile(package)
    (path.parent / "other.xml").write_text('<query-profile id="other"/>')
    with pytest.raises(PackageError, match=r"other\.xml"):
        load_query_profile(package)


def test_document_type_without_schema_is_refused(tmp_path: Path) -> None:
    package = copy_package(tmp_path)
    (package / "schemas" / "user.sd").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "vespa_app", "check", "--package", str(package)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        "services.xml:16: unsupported construct 'document type 'user' without a schema'"
        in result.stderr
    )


@pytest.mark.parametrize("construct", ["component", "streaming"])
def test_serve_refuses_to_start_with_file_and_line(tmp_path: Path, construct: str) -> None:
    package = copy_package(tmp_path)
    path = package / "services.xml"
    text = path.read_text()
    if construct == "component":
        text = text.replace(
            "<search/>", "<search/>\n        <component id='x' class='com.example.X'/>"
        )
        expected = f"{path}:7: unsupported construct 'component'"
    else:
        text = text.replace('mode="index"', 'mode="streaming"', 1)
        expected = f"{path}:15: unsupported construct 'mode=\"streaming\"'"
    path.write_text(text)
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "vespa_app", "serve", "--package", str(package),
         "--data", str(tmp_path / "d"), "--port", str(port)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert expected in result.stderr


def test_cli_help_explains_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vespa_app", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for option in ("--package", "--data", "--host", "--port", "--reset-data",
                   "--max-pending-writes", "--max-body-mb", "--search-threads",
                   "--max-queued-queries", "--snapshot-every"):  # fmt: skip
        assert option in result.stdout
