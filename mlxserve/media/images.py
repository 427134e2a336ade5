"""Images in a conversation: read from data: URLs (or, when the server allows it, fetched over
HTTP), checked against the size limits, and decoded once, so a bad image is refused before any
model work starts."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import logging
from dataclasses import dataclass

import httpx2
from PIL import Image, UnidentifiedImageError

from mlxserve.engine.base import PromptImage
from mlxserve.net.hosts import HostNotAllowed, HostPolicy
from mlxserve.net.pinned_transport import PinnedTransport
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import ImagePart, Turn
from mlxserve.redact import scrub

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 20 * 1024**2  # per image, as OpenAI's API documents
MAX_IMAGE_PIXELS = 50_000_000  # width x height; past this decoding alone takes seconds
# A request's images together: a 7000x7000 PNG of one colour is 143 KB and decodes to 147 MB.
MAX_IMAGES = 16
MAX_TOTAL_PIXELS = 100_000_000
FETCH_TIMEOUT = 10.0  # seconds for one remote image
FETCH_BUDGET = 30.0  # seconds for all the remote images of a request


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = MAX_IMAGE_PIXELS
    remote: bool = False  # fetch http(s) image URLs; off: a page could make us fetch any URL
    # Fetched from public addresses only, but for the hosts --image-allowed-hosts lists.
    hosts: HostPolicy = HostPolicy()
    max_images: int = MAX_IMAGES
    max_total_pixels: int = MAX_TOTAL_PIXELS


def conversation_images(turns: list[Turn]) -> list[tuple[str, ImagePart]]:
    """Every image part in prompt order, with where it sits (for error messages)."""
    return [
        (f"messages[{t}].content[{p}]", part)
        for t, turn in enumerate(turns)
        for p, part in enumerate(turn.parts)
        if isinstance(part, ImagePart)
    ]


async def load_images(turns: list[Turn], limits: ImageLimits) -> list[PromptImage]:
    """The conversation's images, decoded; each image and all of them together bounded."""
    found = conversation_images(turns)
    if len(found) > limits.max_images:
        message = f"{len(found)} images, over the limit of {limits.max_images} per request"
        raise RequestError(413, message, "messages", "too_many_images")
    loaded, pixels_left = [], limits.max_total_pixels
    deadline = asyncio.get_running_loop().time() + FETCH_BUDGET
    for param, part in found:
        data = await _image_bytes(part.url, param, limits, deadline)
        # Decoding base64 and a large picture takes tens of milliseconds: off the event loop.
        image = await asyncio.to_thread(decode_image, data, param, limits, pixels_left)
        pixels_left -= image.pixels.width * image.pixels.height
        loaded.append(image)
    return loaded


def decode_image(
    data: bytes | str, param: str, limits: ImageLimits, pixels_left: int | None = None
) -> PromptImage:
    """Decoded to RGB (a GIF's first frame); a file that is not an image is a 400. `data` may
    be a data: URL's payload; `pixels_left`: what the request's earlier images left."""
    data = _base64_payload(data, param) if isinstance(data, str) else data
    if len(data) > limits.max_bytes:
        raise _too_large(f"{len(data)} bytes, over the {limits.max_bytes}-byte limit", param)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > limits.max_pixels:
                size = f"{width}x{height} pixels, over the {limits.max_pixels}-pixel limit"
                raise _too_large(size, param)
            if pixels_left is not None and width * height > pixels_left:
                total = f"the request's images together pass {limits.max_total_pixels} pixels"
                raise _too_large(f"{width}x{height} pixels: {total}", param)
            image.seek(0)
            pixels, image_format = image.convert("RGB"), image.format or ""
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RequestError(
            400, f"the image at {param} could not be decoded: {exc}", param, "invalid_image"
        ) from exc
    return PromptImage(pixels, hashlib.sha256(data).hexdigest(), data, image_format)


async def _image_bytes(url: str, param: str, limits: ImageLimits, deadline: float) -> bytes | str:
    """The image's bytes, or a data: URL's base64 payload (decoded with the image)."""
    if url.startswith("data:"):
        return _data_url_payload(url, param, limits)
    if url.startswith(("http://", "https://")):
        if not limits.remote:
            raise RequestError(
                400,
                f"the image at {param} is a remote URL, and this server does not fetch them; "
                "send it as a base64 data: URL (or start the server with --allow-remote-images)",
                param,
                "remote_images_disabled",
            )
        try:  # asyncio.timeout_at: Python 3.11's wait_for may lose the client's departure
            async with asyncio.timeout_at(deadline):
                return await _fetch(url, param, limits)
        except TimeoutError as exc:
            message = f"the image at {param} was not fetched within the {FETCH_BUDGET:g} s the "
            message += "request's remote images have together"
            raise RequestError(400, message, param, "image_fetch_failed") from exc
    raise RequestError(
        400, f"the image at {param} must be a data: URL or an http(s) URL", param, "invalid_image"
    )


def _data_url_payload(url: str, param: str, limits: ImageLimits) -> str:
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise RequestError(
            400, f"the image at {param} must be a base64 data: URL", param, "invalid_image"
        )
    if len(payload) * 3 // 4 > limits.max_bytes:  # refused before decoding it
        raise _too_large(f"about {len(payload) * 3 // 4} bytes", param)
    return payload


def _base64_payload(payload: str, param: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(
            400, f"the image at {param} is not valid base64: {exc}", param, "invalid_image"
        ) from exc


async def _fetch(url: str, param: str, limits: ImageLimits) -> bytes:
    """Each hop (redirects too) to a public address, or a listed host's, checked before any
    connection: a request cannot make the server reach its own loopback, LAN or cloud metadata."""
    data = bytearray()
    transport = PinnedTransport(limits.hosts)
    try:
        async with httpx2.AsyncClient(
            timeout=FETCH_TIMEOUT, follow_redirects=True, transport=transport
        ) as client:
            async with client.stream("GET", url) as response:
                response.raise_for_status()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > limits.max_bytes:
                        raise _too_large(f"over the {limits.max_bytes}-byte limit", param)
    except HostNotAllowed as exc:
        message = f"the image at {param} is on a host this server may not fetch from ({exc}): "
        message += "not a public address (the operator may list it with --image-allowed-hosts)"
        raise RequestError(400, message, param, "image_host_not_allowed") from exc
    except (httpx2.HTTPError, OSError) as exc:
        reason = scrub(str(exc))  # a signed URL's token stays out of the answer
        raise RequestError(
            400, f"the image at {param} could not be fetched: {reason}", param, "image_fetch_failed"
        ) from exc
    log.info("image fetched: GET %s, %d bytes", url, len(data))  # the log scrubs its query
    return bytes(data)


def _too_large(what: str, param: str) -> RequestError:
    return RequestError(413, f"the image at {param} is too large: {what}", param, "image_too_large")
