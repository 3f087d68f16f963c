"""Unit tests for service.photos: no database, no Flask, images built in memory.

The project runs pytest with ``filterwarnings = ["error"]``, so any warning
Pillow lets escape from ``sanitise_photo`` fails these tests.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
import time
import tracemalloc
import warnings
import zlib
from collections.abc import Iterator

import pytest
from PIL import ExifTags, Image, ImageDraw, ImageFile, features

from service.photos import PhotoRejected, StoredPhoto, sanitise_photo, sha256_hex

LIMITS = {"max_bytes": 8 * 1024 * 1024, "max_pixels": 40_000_000, "max_edge": 1600}

GPS_IFD = 0x8825
ORIENTATION = 0x0112
JPEG_APP1 = 0xE1  # EXIF and XMP live in APP1 segments
JPEG_APP2 = 0xE2  # ICC profile
JPEG_COM = 0xFE  # comment


# ---------------------------------------------------------------------------
# helpers


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def noise(size: tuple[int, int], seed: int = 1) -> Image.Image:
    """Incompressible RGB noise, so JPEG bytes are spread across the whole picture."""
    rng = random.Random(seed)
    return Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))


def two_halves(size: tuple[int, int]) -> Image.Image:
    """Left half red, right half blue: shows which way the picture was turned."""
    img = Image.new("RGB", size, (0, 0, 255))
    ImageDraw.Draw(img).rectangle((0, 0, size[0] // 2 - 1, size[1] - 1), fill=(255, 0, 0))
    return img


def jpeg_segments(data: bytes) -> list[int]:
    """Marker codes of the JPEG header segments, up to the start of scan."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    markers: list[int] = []
    pos = 2
    while pos < len(data):
        assert data[pos] == 0xFF, f"lost sync at byte {pos}"
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:  # start of scan: header is over
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length
    return markers


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def zero_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit greyscale PNG, written without ever holding its pixels.

    Streaming the rows through zlib keeps a 14000×14000 bomb (196 million
    pixels) at a few tens of KB, built in a fraction of a second and with no
    196 MB Pillow image in memory.
    """
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte "None" + packed bits
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b"")


def reject(data: bytes, **limits: int) -> PhotoRejected:
    with pytest.raises(PhotoRejected) as info:
        sanitise_photo(data, **{**LIMITS, **limits})
    return info.value


def assert_clean_jpeg(photo: StoredPhoto) -> Image.Image:
    """The stored photo is a plain JPEG with no metadata whatsoever."""
    assert photo.mime == "image/jpeg"
    assert b"Exif" not in photo.content
    assert b"http://ns.adobe.com/xap" not in photo.content  # XMP
    segments = jpeg_segments(photo.content)
    assert JPEG_APP1 not in segments
    assert JPEG_APP2 not in segments
    assert JPEG_COM not in segments
    out = Image.open(io.BytesIO(photo.content))
    assert out.format == "JPEG"
    assert out.mode == "RGB"
    assert out.size == (photo.width, photo.height)
    exif = out.getexif()
    assert len(exif) == 0
    assert dict(exif.get_ifd(GPS_IFD)) == {}
    assert "exif" not in out.info and "xmp" not in out.info and "comment" not in out.info
    assert "icc_profile" not in out.info
    return out


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Make any pixel decoding fail the test loudly (AssertionError is never mapped to a PhotoRejected)."""
    calls: list[str] = []

    def forbidden_load(self: ImageFile.ImageFile) -> None:
        calls.append(type(self).__name__)
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden_load)
    yield calls


# ---------------------------------------------------------------------------
# metadata and orientation


@pytest.fixture(scope="module")
def gps_jpeg() -> bytes:
    """200×100 JPEG, left red / right blue, with GPS, Orientation=6, XMP and a comment."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored sideways: turn 90° clockwise to display
    exif[ExifTags.Base.Make] = "PhoneCo"
    exif[GPS_IFD] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (11.0, 33.0, 25.5),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (104.0, 55.0, 12.25),
    }
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:xap="http://ns.adobe.com/xap/1.0/"/></x:xmpmeta>'
    return encode(two_halves((200, 100)), "JPEG", quality=95, exif=exif, xmp=xmp, comment=b"home address")


def test_gps_fixture_really_carries_gps_and_orientation(gps_jpeg: bytes) -> None:
    # Guards the test below: it would prove nothing if the input had no GPS to strip.
    src = Image.open(io.BytesIO(gps_jpeg))
    exif = src.getexif()
    assert exif[ORIENTATION] == 6
    gps = exif.get_ifd(GPS_IFD)
    assert gps[ExifTags.GPS.GPSLatitudeRef] == "N"
    assert float(gps[ExifTags.GPS.GPSLongitude][0]) == 104.0
    assert b"Exif" in gps_jpeg
    assert JPEG_APP1 in jpeg_segments(gps_jpeg)
    assert src.info.get("comment") == b"home address"


def test_exif_gps_xmp_and_comment_are_stripped(gps_jpeg: bytes) -> None:
    photo = sanitise_photo(gps_jpeg, **LIMITS)
    assert_clean_jpeg(photo)
    assert b"home address" not in photo.content
    assert b"PhoneCo" not in photo.content


def test_orientation_is_applied(gps_jpeg: bytes) -> None:
    photo = sanitise_photo(gps_jpeg, **LIMITS)
    assert (photo.width, photo.height) == (100, 200)  # swapped
    out = Image.open(io.BytesIO(photo.content)).convert("RGB")
    # Turned 90° clockwise, the red left half ends up on top, blue at the bottom.
    top = out.getpixel((50, 40))
    bottom = out.getpixel((50, 160))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_broken_exif_keeps_the_photo() -> None:
    # An EXIF APP1 segment with garbage after the header: pixels are fine, so keep them.
    good = encode(two_halves((64, 32)), "JPEG", quality=90)
    garbage = b"Exif\x00\x00" + b"MM\x00\x2a\xff\xff\xff\xf0" + b"\x13" * 40
    app1 = b"\xff\xe1" + struct.pack(">H", len(garbage) + 2) + garbage
    data = good[:2] + app1 + good[2:]
    photo = sanitise_photo(data, **LIMITS)
    assert (photo.width, photo.height) == (64, 32)
    assert_clean_jpeg(photo)


# ---------------------------------------------------------------------------
# transparency, modes and formats


def test_png_with_alpha_becomes_jpeg_on_white() -> None:
    img = Image.new("RGBA", (120, 80), (0, 0, 0, 0))  # fully transparent black
    ImageDraw.Draw(img).rectangle((0, 0, 59, 79), fill=(255, 0, 0, 255))  # opaque red left half
    data = encode(img, "PNG")
    photo = sanitise_photo(data, **LIMITS)
    out = assert_clean_jpeg(photo)
    assert photo.content[:3] == b"\xff\xd8\xff"
    assert (photo.width, photo.height) == (120, 80)
    transparent = out.getpixel((100, 40))
    opaque = out.getpixel((20, 40))
    assert isinstance(transparent, tuple) and isinstance(opaque, tuple)
    assert min(transparent) > 245, transparent  # white, not black
    assert opaque[0] > 230 and opaque[1] < 30 and opaque[2] < 30, opaque


def test_palette_png_with_transparency_is_flattened_on_white() -> None:
    img = Image.new("P", (40, 40), 0)
    img.putpalette([0, 0, 0, 0, 128, 0] + [0] * (254 * 3))
    ImageDraw.Draw(img).rectangle((0, 0, 19, 39), fill=1)
    data = encode(img, "PNG", transparency=0)
    out = assert_clean_jpeg(sanitise_photo(data, **LIMITS))
    transparent = out.getpixel((35, 20))
    green = out.getpixel((5, 20))
    assert isinstance(transparent, tuple) and isinstance(green, tuple)
    assert min(transparent) > 245, transparent
    assert green[1] > 100 and green[0] < 40, green


def test_16_bit_greyscale_png_is_scaled_not_clipped() -> None:
    data = encode(Image.new("I;16", (32, 32), 0x8000), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = assert_clean_jpeg(sanitise_photo(data, **LIMITS))
    pixel = out.getpixel((16, 16))
    assert isinstance(pixel, tuple)
    assert all(118 <= c <= 138 for c in pixel), pixel  # mid grey, not white


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_webp_is_accepted() -> None:
    data = encode(two_halves((90, 60)), "WEBP", quality=90)
    photo = sanitise_photo(data, **LIMITS)
    assert_clean_jpeg(photo)
    assert (photo.width, photo.height) == (90, 60)


# ---------------------------------------------------------------------------
# resizing and hashing


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_image_is_downscaled_to_max_edge(fmt: str) -> None:
    img = two_halves((3000, 1500))
    photo = sanitise_photo(encode(img, fmt), **{**LIMITS, "max_edge": 800})
    assert (photo.width, photo.height) == (800, 400)
    out = assert_clean_jpeg(photo)
    left = out.getpixel((100, 200))
    right = out.getpixel((700, 200))
    assert isinstance(left, tuple) and isinstance(right, tuple)
    assert left[0] > 200 and right[2] > 200  # still the same picture


def test_portrait_image_is_downscaled_on_its_long_edge() -> None:
    photo = sanitise_photo(encode(noise((500, 1000)), "PNG"), **{**LIMITS, "max_edge": 250})
    assert (photo.width, photo.height) == (125, 250)


def test_small_image_is_not_enlarged() -> None:
    photo = sanitise_photo(encode(noise((300, 200)), "JPEG"), **LIMITS)
    assert (photo.width, photo.height) == (300, 200)


def test_same_input_gives_same_hash() -> None:
    data = encode(noise((400, 300), seed=7), "JPEG", quality=90)
    first = sanitise_photo(data, **LIMITS)
    second = sanitise_photo(data, **LIMITS)
    assert first == second
    assert first.sha256 == hashlib.sha256(first.content).hexdigest()
    assert first.sha256 == sha256_hex(first.content)
    assert len(first.sha256) == 64 and first.sha256 == first.sha256.lower()
    other = sanitise_photo(encode(noise((400, 300), seed=8), "JPEG", quality=90), **LIMITS)
    assert other.sha256 != first.sha256


def test_output_is_a_new_encoding_not_the_upload() -> None:
    data = encode(noise((200, 200)), "JPEG", quality=95)
    photo = sanitise_photo(data, **{**LIMITS, "quality": 60})
    assert photo.content != data
    assert len(photo.content) < len(data)


def test_sha256_hex() -> None:
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256_hex(b"abc") == hashlib.sha256(b"abc").hexdigest()


def test_stored_photo_is_frozen() -> None:
    photo = sanitise_photo(encode(noise((20, 20)), "PNG"), **LIMITS)
    with pytest.raises(AttributeError):
        photo.width = 1  # type: ignore[misc]


# ---------------------------------------------------------------------------
# refusals: size in bytes


def test_empty_is_refused() -> None:
    err = reject(b"")
    assert (err.error, err.status) == ("photo.empty", 422)
    assert err.message


def test_too_many_bytes_is_refused_with_413() -> None:
    data = encode(noise((64, 64)), "PNG")
    err = reject(data, max_bytes=len(data) - 1)
    assert (err.error, err.status) == ("photo.too_large", 413)
    assert str(len(data)) in err.message


def test_exactly_max_bytes_is_accepted() -> None:
    data = encode(noise((64, 64)), "PNG")
    assert sanitise_photo(data, **{**LIMITS, "max_bytes": len(data)}).width == 64


def test_byte_limit_is_checked_before_anything_is_parsed(no_decoding: list[str]) -> None:
    err = reject(b"hello" * 100, max_bytes=10)
    assert err.error == "photo.too_large"
    assert no_decoding == []


# ---------------------------------------------------------------------------
# refusals: not an image, unsupported formats, corrupt files


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"hello", id="text"),
        pytest.param(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n", id="pdf"),
        pytest.param(
            b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
            b'<rect width="10" height="10"/></svg>',
            id="svg",
        ),
        pytest.param(b"\x89PNG\r\n\x1a\n", id="png-signature-only"),
        pytest.param(b"\x00" * 1024, id="zeros"),
    ],
)
def test_not_an_image(data: bytes) -> None:
    err = reject(data)
    assert (err.error, err.status) == ("photo.not_an_image", 422)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO"])
def test_unsupported_image_formats_are_refused(fmt: str) -> None:
    data = encode(noise((32, 32)), fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself reads it fine
    err = reject(data)
    assert (err.error, err.status) == ("photo.not_an_image", 422)


def test_truncated_jpeg_is_corrupt() -> None:
    data = encode(noise((256, 256)), "JPEG", quality=90)
    half = data[: len(data) // 2]
    assert Image.open(io.BytesIO(half)).size == (256, 256)  # the header alone still parses
    err = reject(half)
    assert (err.error, err.status) == ("photo.corrupt", 422)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png_is_corrupt() -> None:
    data = encode(noise((128, 128)), "PNG")
    err = reject(data[: len(data) // 2])
    assert (err.error, err.status) == ("photo.corrupt", 422)


def test_png_with_damaged_pixel_data_is_corrupt() -> None:
    data = bytearray(encode(noise((64, 64)), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 100 : idat + 140] = b"\x00" * 40  # CRC no longer matches
    err = reject(bytes(data))
    assert (err.error, err.status) == ("photo.corrupt", 422)


# ---------------------------------------------------------------------------
# refusals: too many pixels (image bombs)


@pytest.fixture(scope="module")
def bomb_14k() -> bytes:
    data = zero_png(14_000, 14_000)
    assert len(data) < 200_000  # a tiny upload...
    return data


@pytest.fixture(scope="module")
def bomb_10k() -> bytes:
    # 100 Mpx: above Pillow's MAX_IMAGE_PIXELS (~89 Mpx, so Pillow *warns*) but
    # below twice that (where Pillow raises), so only our own check stops it.
    return zero_png(10_000, 10_000)


def test_bomb_fixture_declares_its_size(bomb_14k: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(Image.DecompressionBombError):
            Image.open(io.BytesIO(bomb_14k))
    assert struct.unpack(">II", bomb_14k[16:24]) == (14_000, 14_000)


def test_14000_square_png_bomb_is_refused_fast_without_decoding(bomb_14k: bytes, no_decoding: list[str]) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        err = reject(bomb_14k)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (err.error, err.status) == ("photo.too_many_pixels", 413)
    assert elapsed < 1.0
    # tracemalloc only sees Python allocations, not Pillow's C pixel buffers;
    # `no_decoding` is what proves the pixels were never decoded.
    assert peak < 50 * 1024 * 1024
    assert no_decoding == []


def test_bomb_between_pillow_warning_and_error_is_refused_by_our_check(
    bomb_10k: bytes, no_decoding: list[str]
) -> None:
    # filterwarnings=error: a DecompressionBombWarning escaping would fail here.
    started = time.perf_counter()
    err = reject(bomb_10k)
    assert time.perf_counter() - started < 1.0
    assert (err.error, err.status) == ("photo.too_many_pixels", 413)
    assert "10000" in err.message
    assert no_decoding == []


def test_bomb_is_refused_even_with_pillow_warnings_as_errors(bomb_10k: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        err = reject(bomb_10k)
    assert err.error == "photo.too_many_pixels"


def test_max_pixels_is_our_limit_not_pillows(no_decoding: list[str]) -> None:
    # 3000×3000 is nowhere near Pillow's own limit: the refusal is max_pixels'.
    err = reject(zero_png(3_000, 3_000), max_pixels=1_000_000)
    assert (err.error, err.status) == ("photo.too_many_pixels", 413)
    assert no_decoding == []


def test_exactly_max_pixels_is_accepted() -> None:
    data = encode(noise((100, 100)), "PNG")
    assert sanitise_photo(data, **{**LIMITS, "max_pixels": 10_000}).width == 100
    err = reject(data, max_pixels=9_999)
    assert err.error == "photo.too_many_pixels"


def test_no_global_pillow_or_warnings_state_is_changed(bomb_14k: bytes, bomb_10k: bytes) -> None:
    max_pixels = Image.MAX_IMAGE_PIXELS
    truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    filters = list(warnings.filters)
    for data in (bomb_14k, bomb_10k, b"hello"):
        with pytest.raises(PhotoRejected):
            sanitise_photo(data, **LIMITS)
    sanitise_photo(encode(noise((20, 20)), "JPEG"), **LIMITS)
    assert Image.MAX_IMAGE_PIXELS == max_pixels
    assert ImageFile.LOAD_TRUNCATED_IMAGES == truncated
    assert list(warnings.filters) == filters


def test_photo_rejected_carries_key_message_and_status() -> None:
    err = PhotoRejected("photo.corrupt", "The photo file is damaged.")
    assert (err.error, err.message, err.status) == ("photo.corrupt", "The photo file is damaged.", 422)
    assert str(err) == "The photo file is damaged."
    assert PhotoRejected("photo.too_large", "Too big.", 413).status == 413
