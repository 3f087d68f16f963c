"""Khmer is first-class: every user-facing string has a translation, and errors speak Khmer."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
PO = ROOT / "service/translations/km/LC_MESSAGES/messages.po"
MO = PO.with_suffix(".mo")


def source_messages() -> set[str]:
    method_map = [("service/**.py", "python"), ("templates/**.html", "jinja2")]
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(ROOT), method_map, keywords={"_": None, "_l": None, "gettext": None, "lazy_gettext": None}):
        found.add(message if isinstance(message, str) else message[0])
    return found


def load(reader, path: Path) -> dict[str, str]:
    with path.open("rb") as handle:
        return {m.id: m.string for m in reader(handle) if m.id}


def test_every_message_has_a_khmer_translation():
    translated = load(read_po, PO)
    missing = sorted(m for m in source_messages() if not translated.get(m))
    assert not missing, f"add these to {PO.relative_to(ROOT)}: {missing}"


def test_compiled_catalog_matches_po():
    assert load(read_mo, MO) == load(read_po, PO), "run `make install` (pybabel compile) after editing the .po file"


def test_error_message_in_khmer(client, report_body):
    bangkok = {"type": "Point", "coordinates": [100.5018, 13.7563]}
    response = client.post("/api/v1/reports", json=report_body(location=bangkok),
                           headers={"Accept-Language": "km-KH,km;q=0.9,en;q=0.5"})
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "report.outside_service_area"  # the key never changes with language
    assert body["message"].startswith("ទីតាំងនេះនៅក្រៅតំបន់")
    assert "Phnom Penh" in body["message"]


def test_lang_parameter_overrides_header(client):
    response = client.get("/api/v1/reports?bbox=1,2,3&lang=km", headers={"Accept-Language": "en"})
    assert response.status_code == 400
    assert response.get_json()["message"].startswith("bbox ត្រូវតែជាលេខបួន")


def test_english_by_default(client):
    response = client.get("/api/v1/reports?bbox=1,2,3")
    assert response.get_json()["message"].startswith("bbox must be four numbers")
