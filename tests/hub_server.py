"""hub_server: a small, stdlib-only, Hugging Face Hub-compatible HTTP server for offline tests.

It implements the subset of the Hub HTTP API that ``huggingface_hub`` (tested with 2.4.0) and
``transformers`` use to push and pull repositories:

* auth:       GET  /api/whoami-v2  (Bearer tokens from a user table; a wrong token -> 401)
* repos:      POST /api/repos/create, DELETE /api/repos/delete, PUT /api/{type}s/{id}/settings
* info:       GET  /api/{type}s/{id}[/revision/{rev}]   (model_info / dataset_info / repo_info)
* listing:    GET  /api/{type}s/{id}/tree/{rev}[/{path}] , POST .../paths-info/{rev},
              GET  .../refs , GET .../commits/{rev} , GET /api/models (list_models)
* writing:    POST .../preupload/{rev} , POST .../commit/{rev} (NDJSON: file / lfsFile /
              deletedFile / deletedFolder), POST .../branch/{b}, DELETE .../branch/{b},
              POST .../tag/{rev}, DELETE .../tag/{t}, POST /api/validate-yaml
* LFS:        POST /{prefix}{id}.git/info/lfs/objects/batch ("basic" transfer),
              PUT  /_fake_lfs/upload/{ticket}, POST /_fake_lfs/verify
* download:   HEAD/GET /{prefix}{id}/resolve/{rev}/{path}  (ETag, X-Repo-Commit, X-Linked-*, Range)

Not implemented: the Xet storage protocol.  Files that the server asks to be sent as LFS
(size >= --lfs-threshold) therefore need ``HF_HUB_DISABLE_XET=1`` on the client side, which
makes huggingface_hub use the classic LFS "basic" transfer.  With the default threshold
(no LFS at all) every file is committed inline and no client setting is needed.

Usage (CLI):    python fake_hub.py --port 0 --user alice:hf_alice_token --data-dir ./hub-data
                -> prints "FAKE_HUB_READY http://127.0.0.1:<port>" once listening.
Usage (python): server = start_in_thread(users={"alice": "hf_alice_token"}); server.url; server.stop()

The server only ever binds to 127.0.0.1.

Vendored into hf-dmix's tests from the project's shared tools (the suite must stand on its own). Changes: ``stop()``
also closes open keep-alive connections (a stopped server must not keep answering a client that still holds a
connection), ``FakeHub.seed`` / ``FakeHub.files`` write and read repositories directly in the store (test setup and checks
without a client), and ``FakeHub.outage`` — a predicate ``(method, path, headers) -> bool`` — makes matching requests fail like a
server that went away (the connection is closed without a response), to test what a client does when the Hub dies in
the middle of a push.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
DEFAULT_GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.h5 filter=lfs diff=lfs merge=lfs -text\n"
    b"*.onnx filter=lfs diff=lfs merge=lfs -text\n"
)
NO_LFS = 1 << 62


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


# --------------------------------------------------------------------------------------------
# Storage: content-addressed blobs on disk, repo metadata in memory (+ state.json snapshot).
# --------------------------------------------------------------------------------------------
class Store:
    def __init__(self, data_dir: str, users: dict[str, str], orgs: dict[str, list[str]], lfs_threshold: int):
        self.data_dir = data_dir
        self.blob_dir = os.path.join(data_dir, "blobs")
        self.tmp_dir = os.path.join(data_dir, "tmp")
        os.makedirs(self.blob_dir, exist_ok=True)
        os.makedirs(self.tmp_dir, exist_ok=True)
        self.users = dict(users)  # name -> token
        self.token_to_user = {tok: name for name, tok in users.items()}
        self.orgs = {k: list(v) for k, v in orgs.items()}
        self.lfs_threshold = lfs_threshold
        self.lock = threading.RLock()
        self.repos: dict[str, dict] = {}  # key "model:ns/name"
        self.tickets: dict[str, tuple[str, int]] = {}  # upload ticket -> (sha256, size)
        self._counter = 0
        self._load()

    # -- persistence ---------------------------------------------------------------------
    def _state_path(self) -> str:
        return os.path.join(self.data_dir, "state.json")

    def _load(self) -> None:
        if os.path.exists(self._state_path()):
            with open(self._state_path()) as f:
                self.repos = json.load(f)

    def save(self) -> None:
        tmp = self._state_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.repos, f)
        os.replace(tmp, self._state_path())

    # -- blobs -----------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> str:
        return os.path.join(self.blob_dir, sha256)

    def has_blob(self, sha256: str) -> bool:
        return os.path.exists(self.blob_path(sha256))

    def put_bytes(self, data: bytes) -> dict:
        sha = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha):
            tmp = os.path.join(self.tmp_dir, secrets.token_hex(8))
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self.blob_path(sha))
        return {"sha256": sha, "size": len(data), "git_oid": _git_blob_oid(data), "lfs": False}

    # -- auth --------------------------------------------------------------------------------
    def user_for(self, auth_header: str | None) -> str | None:
        """None for anonymous, raises 401 for an unknown token."""
        if not auth_header:
            return None
        if not auth_header.lower().startswith("bearer "):
            raise HttpError(401, "Invalid credentials in Authorization header")
        token = auth_header[7:].strip()
        user = self.token_to_user.get(token)
        if user is None:
            raise HttpError(401, "Invalid credentials in Authorization header")
        return user

    def can_write_namespace(self, user: str | None, namespace: str) -> bool:
        return user is not None and (namespace == user or user in self.orgs.get(namespace, []))

    # -- repos -------------------------------------------------------------------------------
    @staticmethod
    def key(repo_type: str, repo_id: str) -> str:
        return f"{repo_type}:{repo_id}"

    def get_repo(self, repo_type: str, repo_id: str, user: str | None, write: bool = False) -> dict:
        repo = self.repos.get(self.key(repo_type, repo_id))
        visible = repo is not None and (not repo["private"] or self.can_write_namespace(user, repo["namespace"]))
        if not visible:
            raise HttpError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        if write and not self.can_write_namespace(user, repo["namespace"]):
            raise HttpError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def new_commit_oid(self) -> str:
        self._counter += 1
        return hashlib.sha1(f"{time.time_ns()}-{self._counter}-{secrets.token_hex(8)}".encode()).hexdigest()

    def create_repo(self, repo_type: str, repo_id: str, private: bool, user: str) -> dict:
        namespace = repo_id.split("/")[0]
        repo = {
            "type": repo_type,
            "id": repo_id,
            "namespace": namespace,
            "private": private,
            "createdAt": _now(),
            "branches": {},
            "tags": {},
            "commits": {},
            "prs": 0,
        }
        ga = self.put_bytes(DEFAULT_GITATTRIBUTES)
        oid = self.new_commit_oid()
        repo["commits"][oid] = {
            "id": oid,
            "parents": [],
            "title": "initial commit",
            "message": "",
            "author": user,
            "date": _now(),
            "files": {".gitattributes": ga},
        }
        repo["branches"]["main"] = oid
        self.repos[self.key(repo_type, repo_id)] = repo
        return repo

    @staticmethod
    def resolve(repo: dict, rev: str) -> str:
        if rev in repo["branches"]:
            return repo["branches"][rev]
        if rev in repo["tags"]:
            return repo["tags"][rev]
        if rev in repo["commits"]:
            return rev
        if re.fullmatch(r"[0-9a-f]{7,39}", rev):
            matches = [c for c in repo["commits"] if c.startswith(rev)]
            if len(matches) == 1:
                return matches[0]
        raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")


def _entry_json(path: str, f: dict, expand: bool = False, commit: dict | None = None) -> dict:
    out = {"type": "file", "path": path, "size": f["size"], "oid": f["git_oid"]}
    if f["lfs"]:
        pointer = _lfs_pointer(f["sha256"], f["size"])
        out["lfs"] = {"oid": f["sha256"], "size": f["size"], "pointerSize": len(pointer)}
    if expand and commit is not None:
        out["lastCommit"] = {"id": commit["id"], "title": commit["title"], "date": commit["date"]}
    return out


def _folders_of(files: dict) -> set[str]:
    folders = set()
    for p in files:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folders.add("/".join(parts[:i]))
    return folders


def _folder_json(path: str, files: dict) -> dict:
    listing = sorted((p, f["git_oid"]) for p, f in files.items() if p.startswith(path + "/"))
    return {"type": "directory", "path": path, "oid": hashlib.sha1(json.dumps(listing).encode()).hexdigest()}


def _card_data(files: dict, store: Store) -> dict | None:
    f = files.get("README.md")
    if f is None:
        return None
    with open(store.blob_path(f["sha256"]), "rb") as fh:
        text = fh.read().decode("utf-8", errors="replace")
    m = re.match(r"^\s*---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not m:
        return None
    try:
        import yaml  # PyYAML is a dependency of huggingface_hub

        data = yaml.safe_load(m.group(1))
        return data if isinstance(data, dict) else None
    except Exception:
        return None


def _config_data(files: dict, store: Store) -> dict | None:
    f = files.get("config.json")
    if f is None:
        return None
    try:
        with open(store.blob_path(f["sha256"]), "rb") as fh:
            cfg = json.load(fh)
        return {k: cfg[k] for k in ("architectures", "model_type") if k in cfg}
    except Exception:
        return None


# --------------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/0.1"
    store: Store  # set on the subclass
    quiet = True
    hub: FakeHub | None = None  # set on the subclass: live connections and the outage predicate

    def setup(self):
        super().setup()
        if self.hub is not None:
            with self.hub._conn_lock:
                self.hub._connections.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            if self.hub is not None:
                with self.hub._conn_lock:
                    self.hub._connections.discard(self.connection)

    # -- plumbing --------------------------------------------------------------------------
    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write("fake-hub: " + (fmt % args) + "\n")

    def base_url(self) -> str:
        return f"http://{self.headers.get('Host') or '{}:{}'.format(*self.server.server_address[:2])}"

    def read_body(self) -> bytes:
        if self._body is not None:
            return self._body
        self._body = self._read_raw_body()
        return self._body

    def _read_raw_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def read_body_to_file(self, path: str) -> None:
        with open(path, "wb") as out:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out.write(self.read_body())
                return
            self._body = b""  # streamed below: mark the body as consumed
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                out.write(chunk)
                remaining -= len(chunk)

    def send(self, status: int, body: bytes = b"", headers: dict | None = None, head_only: bool = False):
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body and not head_only and self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, obj, status: int = 200, headers: dict | None = None):
        self.send(status, json.dumps(obj).encode(), headers)

    def send_error_json(self, err: HttpError):
        headers = {"X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        self.send(err.status, json.dumps({"error": err.message}).encode(), headers)

    def json_body(self) -> dict:
        raw = self.read_body()
        return json.loads(raw) if raw else {}

    # -- dispatch ----------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def _dispatch(self):
        self._body = None
        outage = self.hub.outage if self.hub is not None else None
        if outage is not None and outage(self.command, urlsplit(self.path).path, self.headers):
            # Simulated outage: drop the connection without answering, as a server that just died would.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        try:
            parts = urlsplit(self.path)
            self.query = parse_qs(parts.query)
            raw_segments = [s for s in parts.path.split("/") if s != ""]
            segs = [unquote(s) for s in raw_segments]
            user = self.store.user_for(self.headers.get("Authorization"))
            self.route(self.command, segs, user)
        except HttpError as e:
            if self._body is None:  # drain the request body so keep-alive connections stay in sync
                self.read_body()
            self.send_error_json(e)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # pragma: no cover - debugging aid
            import traceback

            traceback.print_exc()
            self.send_error_json(HttpError(500, f"fake hub internal error: {e!r}"))

    def route(self, method: str, s: list[str], user: str | None):
        n = len(s)
        if s == ["health"]:
            return self.send_json({"ok": True})
        if n >= 1 and s[0] == "_fake_lfs":
            return self.lfs_transfer(method, s[1:])
        if n >= 1 and s[0] == "api":
            return self.api(method, s[1:], user)
        # /{prefix}{ns}/{name}.git/info/lfs/objects/batch
        if n >= 5 and s[-4:] == ["info", "lfs", "objects", "batch"] and s[-5].endswith(".git"):
            repo_type, rest = self.split_repo_type(s[:-4])
            rest[-1] = rest[-1][: -len(".git")]
            return self.lfs_batch(repo_type, "/".join(rest), user)
        # /{prefix}{ns}/{name}/resolve/{rev}/{path...}
        if "resolve" in s:
            i = s.index("resolve")
            repo_type, rest = self.split_repo_type(s[:i])
            if method in ("GET", "HEAD") and n > i + 2:
                return self.resolve_file(repo_type, "/".join(rest), s[i + 1], "/".join(s[i + 2 :]), user)
        raise HttpError(404, f"Not found: {self.path}")

    @staticmethod
    def split_repo_type(s: list[str]) -> tuple[str, list[str]]:
        if s and s[0] in REPO_TYPES:
            return REPO_TYPES[s[0]], list(s[1:])
        return "model", list(s)

    # -- /api ----------------------------------------------------------------------------------
    def api(self, method: str, s: list[str], user: str | None):
        st = self.store
        n = len(s)
        if s == ["whoami-v2"]:
            if user is None:
                raise HttpError(401, "Invalid credentials in Authorization header")
            orgs = [{"type": "org", "name": o} for o, members in st.orgs.items() if user in members]
            return self.send_json(
                {
                    "type": "user",
                    "id": hashlib.md5(user.encode()).hexdigest()[:24],
                    "name": user,
                    "fullname": user,
                    "email": f"{user}@example.invalid",
                    "emailVerified": True,
                    "isPro": False,
                    "orgs": orgs,
                    "auth": {"type": "access_token", "accessToken": {"displayName": "fake-hub", "role": "write"}},
                }
            )
        if s == ["validate-yaml"] and method == "POST":
            body = self.json_body()
            try:
                card = body.get("content", "")
                m = re.match(r"^\s*---\s*\n(.*?)\n---\s*(\n|$)", card, re.S)
                if m:
                    import yaml

                    yaml.safe_load(m.group(1))
            except Exception as e:
                return self.send_json({"errors": [{"message": f"Invalid YAML: {e}"}]}, status=400)
            return self.send_json({"errors": [], "warnings": []})
        if s[:1] == ["repos"] and n == 2:
            return self.api_repos(method, s[1], user)
        if n == 1 and s[0] in REPO_TYPES and method == "GET":
            return self.list_repos(REPO_TYPES[s[0]], user)
        if n >= 3 and s[0] in REPO_TYPES:
            repo_type = REPO_TYPES[s[0]]
            repo_id = f"{s[1]}/{s[2]}"
            return self.api_repo(method, repo_type, repo_id, s[3:], user)
        raise HttpError(404, f"Not found: {self.path}")

    def api_repos(self, method: str, action: str, user: str | None):
        st = self.store
        body = self.json_body()
        if user is None:
            raise HttpError(401, "You must be authenticated to do this")
        repo_type = body.get("type") or "model"
        name = body.get("name")
        namespace = body.get("organization") or user
        repo_id = f"{namespace}/{name}"
        if action == "create" and method == "POST":
            if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name):
                raise HttpError(400, f"Invalid repo name: {name!r}")
            if not st.can_write_namespace(user, namespace):
                raise HttpError(
                    403, f"You don't have the rights to create a {repo_type} under the namespace {namespace}"
                )
            private = body.get("visibility") == "private" or bool(body.get("private"))
            with st.lock:
                if st.key(repo_type, repo_id) in st.repos:
                    return self.send_json(
                        {"error": "You already created this model repo", "url": self.repo_url(repo_type, repo_id)},
                        status=409,
                        headers={"X-Error-Message": "You already created this model repo"},
                    )
                st.create_repo(repo_type, repo_id, private, user)
                st.save()
            return self.send_json({"url": self.repo_url(repo_type, repo_id), "name": repo_id, "id": repo_id})
        if action == "delete" and method == "DELETE":
            with st.lock:
                st.get_repo(repo_type, repo_id, user, write=True)
                del st.repos[st.key(repo_type, repo_id)]
                st.save()
            return self.send_json({})
        if action == "move" and method == "POST":
            src, dst = body["fromRepo"], body["toRepo"]
            with st.lock:
                repo = st.get_repo(repo_type, src, user, write=True)
                if not st.can_write_namespace(user, dst.split("/")[0]):
                    raise HttpError(403, "Cannot move to that namespace")
                if st.key(repo_type, dst) in st.repos:
                    raise HttpError(409, "Destination already exists")
                del st.repos[st.key(repo_type, src)]
                repo["id"], repo["namespace"] = dst, dst.split("/")[0]
                st.repos[st.key(repo_type, dst)] = repo
                st.save()
            return self.send_json({})
        raise HttpError(404, f"Not found: {self.path}")

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.base_url()}/{URL_PREFIX[repo_type]}{repo_id}"

    def list_repos(self, repo_type: str, user: str | None):
        st = self.store
        author = (self.query.get("author") or [None])[0]
        search = (self.query.get("search") or [None])[0]
        out = []
        with st.lock:
            for repo in st.repos.values():
                if repo["type"] != repo_type:
                    continue
                if repo["private"] and not st.can_write_namespace(user, repo["namespace"]):
                    continue
                if author and repo["namespace"] != author:
                    continue
                if search and search.lower() not in repo["id"].lower():
                    continue
                out.append(self.info_json(repo, repo["branches"]["main"], siblings=False))
        return self.send_json(out)

    def info_json(self, repo: dict, commit_oid: str, siblings: bool = True, blobs: bool = False) -> dict:
        commit = repo["commits"][commit_oid]
        files = commit["files"]
        card = _card_data(files, self.store) or {}
        tags = card.get("tags") or []
        if isinstance(tags, str):
            tags = [tags]
        info = {
            "_id": hashlib.md5(repo["id"].encode()).hexdigest()[:24],
            "id": repo["id"],
            "author": repo["namespace"],
            "sha": commit_oid,
            "lastModified": commit["date"],
            "createdAt": repo["createdAt"],
            "private": repo["private"],
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": list(tags),
        }
        if repo["type"] == "model":
            info["modelId"] = repo["id"]
            if card.get("library_name"):
                info["library_name"] = card["library_name"]
            if card.get("pipeline_tag"):
                info["pipeline_tag"] = card["pipeline_tag"]
            cfg = _config_data(files, self.store)
            if cfg:
                info["config"] = cfg
        if card:
            info["cardData"] = card
        if siblings:
            sib = []
            for path in sorted(files):
                f = files[path]
                entry = {"rfilename": path}
                if blobs:
                    entry["size"] = f["size"]
                    entry["blobId"] = f["git_oid"]
                    if f["lfs"]:
                        pointer = _lfs_pointer(f["sha256"], f["size"])
                        entry["lfs"] = {"size": f["size"], "sha256": f["sha256"], "pointerSize": len(pointer)}
                sib.append(entry)
            info["siblings"] = sib
            if blobs:
                info["usedStorage"] = sum(f["size"] for f in files.values())
        return info

    def api_repo(self, method: str, repo_type: str, repo_id: str, rest: list[str], user: str | None):
        st = self.store
        n = len(rest)
        # model_info / repo_info
        if n == 0 or (rest[0] == "revision" and n == 2):
            if method not in ("GET", "HEAD"):
                raise HttpError(405, "Method not allowed")
            with st.lock:
                repo = st.get_repo(repo_type, repo_id, user)
                oid = st.resolve(repo, rest[1] if n == 2 else "main")
                blobs = (self.query.get("blobs") or ["false"])[0].lower() in ("1", "true")
                return self.send_json(self.info_json(repo, oid, blobs=blobs))
        action = rest[0]
        if action == "auth-check":
            with st.lock:
                st.get_repo(repo_type, repo_id, user)
            return self.send_json({})
        if action in ("xet-write-token", "xet-read-token"):
            raise HttpError(
                501,
                "fake hub does not implement Xet storage: set HF_HUB_DISABLE_XET=1 on the client "
                "(or raise --lfs-threshold so that no file is uploaded as LFS)",
            )
        if action == "settings" and method == "PUT":
            body = self.json_body()
            with st.lock:
                repo = st.get_repo(repo_type, repo_id, user, write=True)
                if "private" in body:
                    repo["private"] = bool(body["private"])
                if "visibility" in body:
                    repo["private"] = body["visibility"] == "private"
                st.save()
            return self.send_json({})
        if action == "tree" and n >= 2 and method == "GET":
            return self.tree(repo_type, repo_id, rest[1], "/".join(rest[2:]), user)
        if action == "paths-info" and n == 2 and method == "POST":
            return self.paths_info(repo_type, repo_id, rest[1], user)
        if action == "refs" and method == "GET":
            with st.lock:
                repo = st.get_repo(repo_type, repo_id, user)
                branches = [
                    {"name": b, "ref": f"refs/heads/{b}", "targetCommit": c}
                    for b, c in repo["branches"].items()
                    if not b.startswith("refs/pr/")
                ]
                tags = [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": c} for t, c in repo["tags"].items()]
                prs = [
                    {"name": b, "ref": b, "targetCommit": c}
                    for b, c in repo["branches"].items()
                    if b.startswith("refs/pr/")
                ]
            out = {"branches": branches, "tags": tags, "converts": []}
            if (self.query.get("include_prs") or ["0"])[0] in ("1", "true", "True"):
                out["pullRequests"] = prs
            return self.send_json(out)
        if action == "commits" and n == 2 and method == "GET":
            with st.lock:
                repo = st.get_repo(repo_type, repo_id, user)
                oid = st.resolve(repo, rest[1])
                out = []
                while oid:
                    c = repo["commits"][oid]
                    out.append(
                        {
                            "id": c["id"],
                            "title": c["title"],
                            "message": c["message"],
                            "date": c["date"],
                            "authors": [{"user": c["author"]}],
                        }
                    )
                    oid = c["parents"][0] if c["parents"] else None
            return self.send_json(out)
        if action == "branch" and n >= 2:
            branch = "/".join(rest[1:])
            if method == "POST":
                body = self.json_body()
                with st.lock:
                    repo = st.get_repo(repo_type, repo_id, user, write=True)
                    if branch in repo["branches"]:
                        raise HttpError(409, f"Branch {branch} already exists")
                    start = st.resolve(repo, body.get("startingPoint") or "main")
                    repo["branches"][branch] = start
                    st.save()
                return self.send_json({})
            if method == "DELETE":
                with st.lock:
                    repo = st.get_repo(repo_type, repo_id, user, write=True)
                    if branch not in repo["branches"]:
                        raise HttpError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
                    if branch == "main":
                        raise HttpError(403, "Cannot delete the main branch")
                    del repo["branches"][branch]
                    st.save()
                return self.send_json({})
        if action == "tag" and n >= 2:
            if method == "POST":
                body = self.json_body()
                with st.lock:
                    repo = st.get_repo(repo_type, repo_id, user, write=True)
                    tag = body["tag"]
                    if tag in repo["tags"]:
                        raise HttpError(409, f"Tag {tag} already exists")
                    repo["tags"][tag] = st.resolve(repo, "/".join(rest[1:]))
                    st.save()
                return self.send_json({})
            if method == "DELETE":
                with st.lock:
                    repo = st.get_repo(repo_type, repo_id, user, write=True)
                    tag = "/".join(rest[1:])
                    if tag not in repo["tags"]:
                        raise HttpError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
                    del repo["tags"][tag]
                    st.save()
                return self.send_json({})
        if action == "preupload" and n >= 2 and method == "POST":
            return self.preupload(repo_type, repo_id, "/".join(rest[1:]), user)
        if action == "commit" and n >= 2 and method == "POST":
            return self.commit(repo_type, repo_id, "/".join(rest[1:]), user)
        raise HttpError(404, f"Not found: {self.path}")

    # -- tree / paths-info ---------------------------------------------------------------------
    def tree(self, repo_type, repo_id, rev, path, user):
        st = self.store
        recursive = (self.query.get("recursive") or ["false"])[0].lower() in ("1", "true")
        expand = (self.query.get("expand") or ["false"])[0].lower() in ("1", "true")
        with st.lock:
            repo = st.get_repo(repo_type, repo_id, user)
            oid = st.resolve(repo, rev)
            commit = repo["commits"][oid]
            files = commit["files"]
            folders = _folders_of(files)
            path = path.strip("/")
            if path and path not in folders:
                raise HttpError(404, f"{path} does not exist on {rev}", "EntryNotFound")
            prefix = path + "/" if path else ""
            out = []
            for folder in sorted(folders):
                if folder.startswith(prefix) and (recursive or "/" not in folder[len(prefix) :]):
                    out.append(_folder_json(folder, files))
            for p in sorted(files):
                if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :]):
                    out.append(_entry_json(p, files[p], expand, commit))
        return self.send_json(out)

    def paths_info(self, repo_type, repo_id, rev, user):
        st = self.store
        raw = self.read_body()
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            body = json.loads(raw or b"{}")
            paths = body.get("paths", [])
            expand = bool(body.get("expand"))
        else:
            form = parse_qs(raw.decode())
            paths = form.get("paths", [])
            expand = (form.get("expand") or ["false"])[0].lower() in ("1", "true")
        with st.lock:
            repo = st.get_repo(repo_type, repo_id, user)
            oid = st.resolve(repo, rev)
            commit = repo["commits"][oid]
            files = commit["files"]
            folders = _folders_of(files)
            out = []
            for p in paths:
                p = p.strip("/")
                if p in files:
                    out.append(_entry_json(p, files[p], expand, commit))
                elif p in folders:
                    out.append(_folder_json(p, files))
        return self.send_json(out)

    # -- upload --------------------------------------------------------------------------------
    def preupload(self, repo_type, repo_id, rev, user):
        st = self.store
        body = self.json_body()
        with st.lock:
            repo = st.get_repo(repo_type, repo_id, user, write=True)
            files = repo["commits"][st.resolve(repo, rev)]["files"]
            out = []
            for f in body.get("files", []):
                lfs = int(f.get("size", 0)) >= st.lfs_threshold
                existing = files.get(f["path"])
                remote_oid = None
                if existing is not None:
                    remote_oid = existing["sha256"] if existing["lfs"] else existing["git_oid"]
                out.append(
                    {
                        "path": f["path"],
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        "oid": remote_oid,
                    }
                )
            commit_oid = repo["branches"].get(rev)
        return self.send_json({"files": out, "commitOid": commit_oid})

    def lfs_batch(self, repo_type, repo_id, user):
        st = self.store
        body = self.json_body()
        operation = body.get("operation", "upload")
        with st.lock:
            st.get_repo(repo_type, repo_id, user, write=operation == "upload")
            objects = []
            for obj in body.get("objects", []):
                oid, size = obj["oid"], int(obj["size"])
                entry = {"oid": oid, "size": size, "authenticated": True}
                if operation == "upload":
                    if not st.has_blob(oid):
                        ticket = secrets.token_urlsafe(16)
                        st.tickets[ticket] = (oid, size)
                        entry["actions"] = {
                            "upload": {"href": f"{self.base_url()}/_fake_lfs/upload/{ticket}", "header": {}},
                            "verify": {"href": f"{self.base_url()}/_fake_lfs/verify", "header": {}},
                        }
                else:
                    if st.has_blob(oid):
                        entry["actions"] = {"download": {"href": f"{self.base_url()}/_fake_lfs/download/{oid}"}}
                    else:
                        entry["error"] = {"code": 404, "message": "Object does not exist"}
                objects.append(entry)
        return self.send_json(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            headers={"Content-Type": "application/vnd.git-lfs+json"},
        )

    def lfs_transfer(self, method, s):
        st = self.store
        if method == "PUT" and len(s) == 2 and s[0] == "upload":
            with st.lock:
                ticket = st.tickets.pop(s[1], None)
            if ticket is None:
                raise HttpError(403, "Unknown or used upload ticket")
            oid, size = ticket
            tmp = os.path.join(st.tmp_dir, secrets.token_hex(8))
            self.read_body_to_file(tmp)
            h = hashlib.sha256()
            with open(tmp, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != oid or os.path.getsize(tmp) != size:
                os.remove(tmp)
                raise HttpError(400, "Uploaded content does not match the announced oid/size")
            os.replace(tmp, st.blob_path(oid))
            return self.send(200, b"", {"ETag": f'"{oid}"'})
        if method == "POST" and s == ["verify"]:
            body = self.json_body()
            if st.has_blob(body["oid"]) and os.path.getsize(st.blob_path(body["oid"])) == int(body["size"]):
                return self.send_json({})
            raise HttpError(404, "Object not found")
        if method in ("GET", "HEAD") and len(s) == 2 and s[0] == "download" and st.has_blob(s[1]):
            return self.send_file(st.blob_path(s[1]), {})
        raise HttpError(404, "Not found")

    def commit(self, repo_type, repo_id, rev, user):
        st = self.store
        raw = self.read_body()
        lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        create_pr = (self.query.get("create_pr") or ["0"])[0] in ("1", "true")
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        with st.lock:
            repo = st.get_repo(repo_type, repo_id, user, write=True)
            if rev not in repo["branches"]:
                if rev in repo["tags"] or rev in repo["commits"]:
                    raise HttpError(400, f"Cannot commit to a tag or a commit: {rev}")
                raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            parent = repo["branches"][rev]
            expected = header.get("parentCommit")
            if expected and expected != parent:
                raise HttpError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo["commits"][parent]["files"])
            for item in lines:
                key, val = item["key"], item.get("value", {})
                if key == "file":
                    content = val["content"]
                    data = base64.b64decode(content) if val.get("encoding") == "base64" else content.encode()
                    files[val["path"]] = st.put_bytes(data)
                elif key == "lfsFile":
                    sha = val["oid"]
                    if not st.has_blob(sha):
                        raise HttpError(422, f"LFS object {sha} for {val['path']} was never uploaded")
                    size = os.path.getsize(st.blob_path(sha))
                    files[val["path"]] = {
                        "sha256": sha,
                        "size": size,
                        "git_oid": _git_blob_oid(_lfs_pointer(sha, size)),
                        "lfs": True,
                    }
                elif key == "deletedFile":
                    if val["path"] not in files:
                        raise HttpError(404, f"A file with this name doesn't exist: {val['path']}", "EntryNotFound")
                    del files[val["path"]]
                elif key == "deletedFolder":
                    prefix = val["path"].rstrip("/") + "/"
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise HttpError(404, f"A file with this name doesn't exist: {val['path']}", "EntryNotFound")
                    for p in doomed:
                        del files[p]
            oid = st.new_commit_oid()
            repo["commits"][oid] = {
                "id": oid,
                "parents": [parent],
                "title": header.get("summary") or "Upload",
                "message": header.get("description") or "",
                "author": user,
                "date": _now(),
                "files": files,
            }
            out = {"success": True, "commitOid": oid, "hookOutput": ""}
            if create_pr:
                repo["prs"] += 1
                num = repo["prs"]
                repo["branches"][f"refs/pr/{num}"] = oid
                out["pullRequestUrl"] = f"{self.repo_url(repo_type, repo_id)}/discussions/{num}"
                out["commitUrl"] = f"{self.repo_url(repo_type, repo_id)}/commit/{oid}"
            else:
                repo["branches"][rev] = oid
                out["commitUrl"] = f"{self.repo_url(repo_type, repo_id)}/commit/{oid}"
            st.save()
        return self.send_json(out)

    # -- download ------------------------------------------------------------------------------
    def resolve_file(self, repo_type, repo_id, rev, path, user):
        st = self.store
        with st.lock:
            repo = st.get_repo(repo_type, repo_id, user)
            oid = st.resolve(repo, rev)
            f = repo["commits"][oid]["files"].get(path)
            if f is None:
                raise HttpError(404, "Entry not found", "EntryNotFound")
        headers = {"X-Repo-Commit": oid, "Content-Type": "application/octet-stream"}
        if f["lfs"]:
            headers["ETag"] = f'"{f["sha256"]}"'
            headers["X-Linked-Etag"] = f'"{f["sha256"]}"'
            headers["X-Linked-Size"] = str(f["size"])
        else:
            headers["ETag"] = f'"{f["git_oid"]}"'
        return self.send_file(st.blob_path(f["sha256"]), headers)

    def send_file(self, path: str, headers: dict):
        size = os.path.getsize(path)
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if m:
                if m.group(1):
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else size - 1
                elif m.group(2):
                    start = max(0, size - int(m.group(2)))
                end = min(end, size - 1)
                if start > end and size > 0:
                    return self.send(416, b"", {"Content-Range": f"bytes */{size}"})
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = max(0, end - start + 1)
        headers["Content-Length"] = str(length)
        headers["Accept-Ranges"] = "bytes"
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(path, "rb") as fh:
            fh.seek(start)
            remaining = length
            while remaining:
                chunk = fh.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)


class FakeHub:
    """Run the server in a background thread (handy for pytest fixtures)."""

    def __init__(self, users=None, orgs=None, data_dir=None, port=0, lfs_threshold=NO_LFS, quiet=True):
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="fake-hub-")
        self.store = Store(self.data_dir, users or {"user": "hf_fake_token"}, orgs or {}, lfs_threshold)
        self.outage = None  # (method, path, headers) -> bool: drop matching requests without a response
        self._connections: set = set()
        self._conn_lock = threading.Lock()
        handler = type("BoundHandler", (Handler,), {"store": self.store, "quiet": quiet, "hub": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="fake-hub", daemon=True)

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        with self._conn_lock:  # keep-alive connections would otherwise still be served by their threads
            for conn in list(self._connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def seed(self, repo_id: str, files: dict, private: bool = False, repo_type: str = "model") -> str:
        """Create ``repo_id`` with ``files`` (path -> bytes) directly in the store (no HTTP); the commit id."""
        st = self.store
        with st.lock:
            namespace = repo_id.split("/")[0]
            repo = st.repos.get(st.key(repo_type, repo_id)) or st.create_repo(repo_type, repo_id, private, namespace)
            parent = repo["branches"]["main"]
            tree = dict(repo["commits"][parent]["files"])
            tree.update({path: st.put_bytes(data) for path, data in files.items()})
            oid = st.new_commit_oid()
            repo["commits"][oid] = {
                "id": oid,
                "parents": [parent],
                "title": "seed",
                "message": "",
                "author": namespace,
                "date": _now(),
                "files": tree,
            }
            repo["branches"]["main"] = oid
            st.save()
        return oid

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict:
        """The files of ``repo_id`` at ``revision`` as {path: bytes}, read from the store (no HTTP, no auth)."""
        st = self.store
        with st.lock:
            repo = st.repos[st.key(repo_type, repo_id)]
            tree = repo["commits"][st.resolve(repo, revision)]["files"]
            out = {}
            for path, f in tree.items():
                with open(st.blob_path(f["sha256"]), "rb") as fh:
                    out[path] = fh.read()
            return out

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def start_in_thread(**kwargs) -> FakeHub:
    return FakeHub(**kwargs).start()


def main(argv=None):
    p = argparse.ArgumentParser(description="Minimal Hugging Face Hub-compatible server (127.0.0.1 only)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--user", action="append", default=[], help="NAME:TOKEN (repeatable); default user:hf_fake_token")
    p.add_argument("--org", action="append", default=[], help="ORG:member1,member2 (repeatable)")
    p.add_argument(
        "--lfs-threshold",
        type=int,
        default=NO_LFS,
        help="files of at least this many bytes are uploaded through LFS (client needs HF_HUB_DISABLE_XET=1)",
    )
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    users = dict(u.split(":", 1) for u in a.user) or {"user": "hf_fake_token"}
    orgs = {o.split(":", 1)[0]: o.split(":", 1)[1].split(",") for o in a.org}
    hub = FakeHub(
        users=users, orgs=orgs, data_dir=a.data_dir, port=a.port, lfs_threshold=a.lfs_threshold, quiet=not a.verbose
    )
    print(f"FAKE_HUB_READY {hub.url}", flush=True)
    try:
        hub.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        hub.httpd.server_close()


if __name__ == "__main__":
    main()
