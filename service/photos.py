"""Turn an uploaded image into a photo that is safe to store and serve.

Report photos come from phones of members of the public, so each upload is
treated as hostile until proven otherwise. :func:`sanitise_photo` checks the
size in bytes, identifies the format from the file header (JPEG, PNG and WebP
only), refuses decompression bombs from the header *before* any pixel is
decoded, decodes the picture fully (a truncated or corrupt file is refused),
stands it the right way up from its EXIF orientation, flattens transparency
onto white, shrinks it so its long edge fits ``max_edge`` and re-encodes it as
a fresh JPEG.

The stored JPEG carries no metadata at all: no EXIF (above all no GPS
position, which would reveal where the reporter stood or lives), no XMP, no
comment and no ICC profile. Its SHA-256 is the content-addressed key.

This module is pure: it imports only the standard library and Pillow, touches
no Flask request or database, and changes no global Pillow setting
(``Image.MAX_IMAGE_PIXELS`` and ``ImageFile.LOAD_TRUNCATED_IMAGES`` are left
alone). Every refusal is a :class:`PhotoRejected` carrying a stable machine
key, a human sentence and the HTTP status to answer with.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Final

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    from service.config import Config

__all__ = [
    "ACCEPTED_FORMATS",
    "OUTPUT_MIME",
    "PhotoRejected",
    "StoredPhoto",
    "sanitise_photo",
    "sha256_hex",
    "thumbnail",
]

#: Pillow format names accepted on upload; anything else is not an image to us.
ACCEPTED_FORMATS: Final[tuple[str, ...]] = ("JPEG", "PNG", "WEBP")

#: Every stored photo is a JPEG.
OUTPUT_MIME: Final[str] = "image/jpeg"

#: Colour that transparent pixels are flattened onto.
_BACKGROUND: Final[tuple[int, int, int]] = (255, 255, 255)

#: Errors Pillow's decoders raise on truncated or malformed data.
_DECODE_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OSError,
    SyntaxError,
    ValueError,
    struct.error,
    zlib.error,
    EOFError,
    IndexError,
)


@dataclass(frozen=True)
class StoredPhoto:
    """A sanitised photo, ready to be stored under its content hash."""

    sha256: str
    """Hex SHA-256 of ``content``: the content-addressed storage key."""
    content: bytes
    """The re-encoded JPEG, free of any metadata."""
    mime: str
    """Media type of ``content``; always ``image/jpeg``."""
    width: int
    """Width in pixels of ``content``, after orientation and downscaling."""
    height: int
    """Height in pixels of ``content``, after orientation and downscaling."""


class PhotoRejected(Exception):
    """An upload that cannot be stored as a photo.

    ``error`` is a stable machine key (``photo.*``) clients may switch on,
    ``message`` a sentence for people, ``status`` the HTTP status to answer
    with (413 for "too big", 422 for "not a usable image").
    """

    def __init__(self, error: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.error: str = error
        self.message: str = message
        self.status: int = status

    def __repr__(self) -> str:
        return f"PhotoRejected(error={self.error!r}, message={self.message!r}, status={self.status!r})"


def sha256_hex(data: bytes) -> str:
    """Return the lowercase hex SHA-256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sanitise_photo(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    max_edge: int,
    quality: int = 82,
) -> StoredPhoto:
    """Check, decode, orient, shrink and re-encode an uploaded image.

    :param data: the uploaded file, as received.
    :param max_bytes: largest accepted upload in bytes (``photo.too_large``, 413).
    :param max_pixels: largest accepted ``width * height`` as declared by the
        file header; bigger is refused before decoding (``photo.too_many_pixels``, 413).
    :param max_edge: the stored photo's long edge is at most this many pixels;
        smaller pictures are never enlarged.
    :param quality: JPEG quality of the stored photo (1-95).
    :raises PhotoRejected: ``photo.empty``, ``photo.too_large``,
        ``photo.not_an_image``, ``photo.too_many_pixels`` or ``photo.corrupt``.
    :returns: the re-encoded JPEG with its hash and dimensions.
    """
    if max_edge < 1:
        raise ValueError("max_edge must be at least 1")

    # 1. Size in bytes, before Pillow sees anything.
    if not data:
        raise PhotoRejected("photo.empty", "The photo is empty.", 422)
    if len(data) > max_bytes:
        raise PhotoRejected(
            "photo.too_large",
            f"The photo is {len(data)} bytes; the largest accepted is {max_bytes} bytes.",
            413,
        )

    # Pillow warns (DecompressionBombWarning) when a header declares more than
    # Image.MAX_IMAGE_PIXELS pixels. Our own pixel check below is the one that
    # decides, so that warning is silenced here, locally, and can never
    # escalate into an error where warnings are errors. Above twice that limit
    # Pillow raises DecompressionBombError itself; that is mapped to the same
    # refusal. Pillow also reports malformed EXIF (read already by
    # Image.open, for the DPI) with a UserWarning: all EXIF is thrown away
    # here anyway, so a broken EXIF block costs at most the rotation.
    # (catch_warnings() restores the filters on the way out, whatever happens.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        img = _open(data)
        try:
            return _sanitise_opened(img, max_pixels=max_pixels, max_edge=max_edge, quality=quality)
        finally:
            img.close()


def _open(data: bytes) -> ImageFile.ImageFile:
    """2. Identify the image from its header only; no pixel is decoded here."""
    try:
        img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise _too_many_pixels() from exc
    except UnidentifiedImageError as exc:
        raise _not_an_image() from exc
    except _DECODE_ERRORS as exc:
        # A recognised signature followed by a broken header.
        raise PhotoRejected("photo.corrupt", "The photo file is damaged or incomplete.", 422) from exc
    if img.format not in ACCEPTED_FORMATS:  # belt and braces: `formats=` already restricts this
        img.close()
        raise _not_an_image()
    return img


def _sanitise_opened(img: ImageFile.ImageFile, *, max_pixels: int, max_edge: int, quality: int) -> StoredPhoto:
    # 3. Image bombs: judge by the size the header declares, before load().
    width, height = img.size
    if width < 1 or height < 1:
        raise PhotoRejected("photo.corrupt", "The photo has no pixels.", 422)
    if width * height > max_pixels:
        raise _too_many_pixels(width, height, max_pixels)

    # 4. Decode every pixel now, so a truncated file fails here and not later.
    # For JPEG, draft() lets the decoder scale by 1/2, 1/4 or 1/8 while
    # decoding, never below the size the photo is shrunk to anyway, which
    # saves most of the memory for big camera photos. (The box is square, so
    # the rotation applied later does not change that size.)
    try:
        if img.format == "JPEG" and max(width, height) > max_edge:
            img.draft("RGB", _fit(width, height, max_edge))
        img.load()
    except Image.DecompressionBombError as exc:
        raise _too_many_pixels(width, height, max_pixels) from exc
    except _DECODE_ERRORS as exc:
        raise PhotoRejected("photo.corrupt", "The photo file is damaged or incomplete.", 422) from exc

    # 5. Right way up, opaque RGB, no larger than max_edge, fresh JPEG.
    picture = _upright(img)
    picture = _to_rgb(picture)
    if picture.width > max_edge or picture.height > max_edge:
        picture.thumbnail((max_edge, max_edge), Image.Resampling.LANCZOS)

    # convert() and friends copy `info` (EXIF, XMP, comment, ICC profile...)
    # and the JPEG encoder writes some of it back by default. Start clean.
    picture.info = {}
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=quality, optimize=True, progressive=True)
    content = out.getvalue()

    # 6. Content-addressed result.
    return StoredPhoto(
        sha256=sha256_hex(content),
        content=content,
        mime=OUTPUT_MIME,
        width=picture.width,
        height=picture.height,
    )


def _fit(width: int, height: int, max_edge: int) -> tuple[int, int]:
    """Size of a ``width``×``height`` picture shrunk so its long edge is ``max_edge`` (rounded up)."""
    long_edge = max(width, height)
    return (max(1, -(-width * max_edge // long_edge)), max(1, -(-height * max_edge // long_edge)))


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a photo whose EXIF is unreadable is kept as it is.

    Broken EXIF does not make the pixels unusable, and all EXIF is discarded
    anyway, so it only costs the rotation.
    """
    try:
        upright = ImageOps.exif_transpose(img)
    except (*_DECODE_ERRORS, KeyError, TypeError):
        return img
    return upright if upright is not None else img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Return an opaque 8-bit RGB image; transparency is flattened onto white."""
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        # 16-bit (or wider) greyscale: scale to 8 bits instead of clipping to white.
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
        mode = img.mode

    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, _BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode == "RGB":
        return img
    return img.convert("RGB")


def _not_an_image() -> PhotoRejected:
    return PhotoRejected(
        "photo.not_an_image",
        "The file is not a photo in a supported format (JPEG, PNG or WebP).",
        422,
    )


def _too_many_pixels(width: int | None = None, height: int | None = None, max_pixels: int | None = None) -> PhotoRejected:
    if width is not None and height is not None and max_pixels is not None:
        message = f"The photo is {width}×{height} pixels; the largest accepted is {max_pixels} pixels in all."
    else:
        message = "The photo has too many pixels."
    return PhotoRejected("photo.too_many_pixels", message, 413)


def sanitise_upload(upload: BinaryIO, config: Config) -> StoredPhoto:
    """An uploaded file as the server keeps it, within the configured limits.

    Reads at most one byte more than ``MAX_PHOTO_BYTES``: enough to know it is too large.
    """
    return sanitise_photo(upload.read(config.max_photo_bytes + 1), max_bytes=config.max_photo_bytes,
                          max_pixels=config.max_photo_pixels, max_edge=config.photo_max_edge)


#: The long edge of a thumbnail (map popups): twice a 120 px popup image, for sharp phone screens.
THUMBNAIL_EDGE: Final[int] = 240


def thumbnail(stored_jpeg: bytes, edge: int = THUMBNAIL_EDGE) -> bytes:
    """A small JPEG of an already sanitised stored photo (decoded at 1/2…1/8 scale, so it is cheap)."""
    with Image.open(io.BytesIO(stored_jpeg), formats=("JPEG",)) as img:
        img.draft("RGB", (edge, edge))
        img.thumbnail((edge, edge), Image.Resampling.LANCZOS)
        img.info = {}
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=78, optimize=True)
        return out.getvalue()
