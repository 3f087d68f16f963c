"""Translated sentences for failures raised by the pure packages (geo/, photos).

``geo`` and ``service.photos`` know nothing of Flask or locales, so they raise
a stable key with an English sentence; the HTTP layer swaps in the sentence
for the reader's language here, keeping the pure message as the fallback.
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

MESSAGES = {
    "photo.empty": _l("The photo is empty."),
    "photo.too_large": _l("The photo is too large; send a smaller one."),
    "photo.too_many_pixels": _l("The picture has too many pixels; send a smaller one."),
    "photo.not_an_image": _l("This is not a photo we can read (JPEG, PNG or WebP)."),
    "photo.corrupt": _l("The photo is damaged or incomplete; send it again."),
    "bbox.malformed": _l("bbox must be four numbers: minLon,minLat,maxLon,maxLat."),
    "bbox.out_of_range": _l("bbox is outside the world: longitude −180…180, latitude −90…90."),
    "bbox.inverted": _l("bbox minimums must be smaller than its maximums."),
    "location.not_finite": _l("Coordinates must be finite numbers."),
    "location.out_of_range": _l("Coordinates are out of range: longitude −180…180, latitude −90…90."),
    "location.not_a_number": _l("Coordinates must be numbers."),
    "tile.out_of_range": _l("There is no such tile: zoom 0…22, and x and y from 0 to 2^zoom − 1."),
    "tile.malformed": _l("Tile zoom, x and y must be whole numbers."),
    "sync.body_too_large": _l("The batch is too large; send fewer items in each batch."),
    "sync.corrupt_gzip": _l("The gzip body is damaged; send the batch again."),
    "sync.unsupported_encoding": _l("Send the batch plain or gzip-compressed."),
    "sync.invalid_json": _l("The batch is not valid JSON (UTF-8)."),
    "sync.invalid_batch": _l("The batch envelope is invalid; see errors."),
    "sync.too_many_items": _l("The batch has too many items; split it."),
    "sync.duplicate_client_id": _l("Two items in this batch have the same client_id."),
    "sync.photo_hash_mismatch": _l("The photo's bytes do not match its sha256; the upload was discarded, start again."),
    "sync.upload_gap": _l("Part of the photo is missing; send it from Upload-Offset."),
    "sync.upload_length_mismatch": _l("This upload began with another size; send it from Upload-Offset."),
    "sync.bad_content_range": _l("Content-Range must read 'bytes first-last/total'."),
    "sync.range_not_satisfiable": _l("Content-Range goes past the end of the photo."),
    "sync.photo_too_large": _l("The photo is too large; send a smaller one."),
    "sync.bad_sha256": _l("A photo is named by the sha256 of its bytes: 64 hex characters."),
    "sync.batch_conflict": _l("This batch_id was already used for other content; send new items in a new batch."),
}


def translated(key: str, fallback: str) -> str:
    message = MESSAGES.get(key)
    return str(message) if message is not None else fallback
