"""A local stand-in for the Hugging Face Hub's HTTP API, for HF_ENDPOINT: model info with each
file's size and LFS SHA-256, and file downloads with the headers huggingface_hub reads
(X-Repo-Commit, ETag, Content-Length) and byte ranges for resuming. It can drop the connection
partway through a file (once), serve a file whose bytes do not match its advertised hash, answer
a repo's info with a page that is not JSON, advertise a file larger than it is, and hold a repo's
info until a test lets it go."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".gguf", ".safetensors")
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/[^/]+/(?P<file>.+)$")
INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(/revision/[^/]+)?$")


@dataclass
class HubFile:
    data: bytes
    sha256: str

    @classmethod
    def of(cls, source: bytes | Path) -> HubFile:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        return cls(data, hashlib.sha256(data).hexdigest())


@dataclass
class StandInHub:
    repos: dict[str, dict[str, HubFile]] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)  # file -> bytes sent, then cut once
    corrupt: set[str] = field(default_factory=set)  # file names served with a flipped byte
    garbled: set[str] = field(default_factory=set)  # repos whose info is not JSON (a proxy's page)
    advertised: dict[tuple[str, str], int] = field(default_factory=dict)  # (repo, file) -> size
    held: set[str] = field(default_factory=set)  # repos whose info waits for `release`
    release: threading.Event = field(default_factory=threading.Event)
    ranges: list[tuple[str, int]] = field(default_factory=list)  # (file, first byte) asked

    def add(self, repo: str, files: dict[str, bytes | Path]) -> None:
        self.repos[repo] = {name: HubFile.of(source) for name, source in files.items()}

    def serve(self) -> tuple[http.server.ThreadingHTTPServer, str]:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hub.answer(self, body=True)

            def do_HEAD(self):
                hub.answer(self, body=False)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}"

    def answer(self, request, body: bool) -> None:
        path = request.path.split("?")[0]
        if match := INFO.match(path):
            return self._info(request, match["repo"])
        if match := RESOLVE.match(path):
            return self._file(request, match["repo"], match["file"], body)
        self._not_found(request, "EntryNotFound")

    def _info(self, request, repo: str) -> None:
        if repo not in self.repos:
            return self._not_found(request, "RepoNotFound")
        if repo in self.garbled:
            return self._reply(request, "<html>Service Unavailable</html>", "text/html")
        if repo in self.held:
            self.release.wait(60)
        siblings = []
        for name, hub_file in self.repos[repo].items():
            size = self.advertised.get((repo, name), len(hub_file.data))
            sibling = {"rfilename": name, "size": size}
            if name.endswith(LFS_SUFFIXES):
                sibling["lfs"] = {"sha256": hub_file.sha256, "size": size, "pointerSize": 134}
            siblings.append(sibling)
        payload = json.dumps({"id": repo, "modelId": repo, "sha": COMMIT, "siblings": siblings})
        self._reply(request, payload, "application/json")

    @staticmethod
    def _reply(request, payload: str, content_type: str) -> None:
        request.send_response(200)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload.encode())

    def _file(self, request, repo: str, name: str, body: bool) -> None:
        hub_file = self.repos.get(repo, {}).get(name)
        if hub_file is None:
            return self._not_found(request, "EntryNotFound")
        data = hub_file.data
        if name in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = int(re.match(r"bytes=(\d+)-", request.headers.get("Range", "bytes=0-"))[1])
        if body:
            self.ranges.append((name, start))
        request.send_response(206 if start else 200)
        request.send_header("X-Repo-Commit", COMMIT)
        request.send_header("ETag", f'"{hub_file.sha256}"')
        request.send_header("Content-Length", str(len(data) - start))
        if start:
            request.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        request.end_headers()
        if not body:
            return
        cut = self.drop_after.pop(name, None)
        if cut is not None and start < cut:
            request.wfile.write(data[start:cut])
            request.wfile.flush()
            request.close_connection = True  # fewer bytes than Content-Length promised
            return
        request.wfile.write(data[start:])

    def _not_found(self, request, code: str) -> None:
        request.send_response(404)
        request.send_header("X-Error-Code", code)
        request.send_header("Content-Length", "0")
        request.end_headers()
