"""The OCI distribution API over anyio-native HTTP (httpx): manifests and blobs, token and basic auth.

Plain HTTP is used only for loopback registries or ones named ``insecure``. A
registry that refuses connections or does not answer fails within seconds
(no retries); every byte is verified by the caller against its digest.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import anyio
import httpx

from .._errors import AuthenticationError, ImageError, RegistryError
from .manifest import MAX_DOCUMENT
from .reference import DOCKER_HUB, Reference
from .store import COPY_CHUNK, BlobWriter

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_CHALLENGE_PARAMETER = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def docker_config_credentials(registry: str) -> Credentials | None:
    """Credentials for ``registry`` from docker's config file (``$DOCKER_CONFIG/config.json``), if any."""
    path = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    try:
        auths = json.loads(path.read_text()).get("auths", {})
    except (OSError, ValueError, AttributeError):
        return None
    keys = [registry, f"https://{registry}", f"http://{registry}"]
    if registry == DOCKER_HUB:
        keys.append(DOCKER_HUB_CONFIG_KEY)
    for key in keys:
        entry = auths.get(key) if isinstance(auths, dict) else None
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("auth"), str):
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return Credentials(username, password)
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return Credentials(entry["username"], entry["password"])
    return None


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class RegistryClient:
    """One repository on one registry; use with ``async with``."""

    def __init__(
        self, reference: Reference, *, credentials: Credentials | None, insecure: bool = False, push: bool = False
    ) -> None:
        self._actions = "pull,push" if push else "pull"
        self._host = reference.api_host
        self._repository = reference.repository
        scheme = "http" if insecure or is_loopback(self._host) else "https"
        self._base = f"{scheme}://{self._host}/v2/{reference.repository}"
        self._credentials = credentials
        self._authorization: str | None = None
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT), follow_redirects=True
        )

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._client.aclose()

    async def manifest(self, target: str, accept: Sequence[str]) -> tuple[bytes, str, str | None]:
        """The manifest or index body, its media type, and the registry's claimed digest."""
        response = await self._get(f"/manifests/{target}", accept)
        try:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT:
                    raise ImageError(f"manifest {target} is larger than {MAX_DOCUMENT} bytes")
        finally:
            await response.aclose()
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return bytes(body), media_type, response.headers.get("Docker-Content-Digest")

    async def blob(self, digest: str, writer: BlobWriter, progress: Callable[[int], None]) -> None:
        """Stream the blob into ``writer`` (disk writes in a worker thread), reporting bytes as they land."""
        response = await self._get(f"/blobs/{digest}", ())
        try:
            pending = bytearray()
            async for chunk in response.aiter_bytes():
                pending += chunk
                if len(pending) >= COPY_CHUNK:
                    await anyio.to_thread.run_sync(writer.write, bytes(pending))
                    progress(len(pending))
                    pending.clear()
            await anyio.to_thread.run_sync(writer.write, bytes(pending))
            progress(len(pending))
        finally:
            await response.aclose()

    async def has_blob(self, digest: str) -> bool:
        """Whether the repository has the blob ``digest`` already (a push need not send it)."""
        try:
            response = await self._request("HEAD", f"/blobs/{digest}")
        except RegistryError as error:
            if error.status == 404:
                return False
            raise
        await response.aclose()
        return True

    async def upload_blob(self, digest: str, path: Path, size: int) -> None:
        """Send the blob at ``path`` (read in a worker thread, a chunk at a time) in one monolithic upload."""
        started = await self._request("POST", "/blobs/uploads/")
        await started.aclose()
        location = started.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self._host} started an upload without saying where")
        url = httpx.URL(self._base).join(location)
        url = url.copy_merge_params({"digest": digest})

        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as file:
                while chunk := await anyio.to_thread.run_sync(file.read, COPY_CHUNK):
                    yield chunk

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        response = await self._request("PUT", str(url), headers=headers, content=chunks())
        await response.aclose()

    async def put_manifest(self, target: str, body: bytes, media_type: str) -> None:
        response = await self._request("PUT", f"/manifests/{target}", headers={"Content-Type": media_type},
                                       content=body)
        await response.aclose()

    async def _get(self, path: str, accept: Sequence[str]) -> httpx.Response:
        return await self._request("GET", path, headers={"Accept": ", ".join(accept)} if accept else {})

    async def _request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
    ) -> httpx.Response:
        """``method`` on ``path`` (below the repository) or a full URL, authenticating once if asked to."""
        url = path if path.startswith(("http://", "https://")) else self._base + path
        for attempt in range(2):
            sent = dict(headers or {})
            if self._authorization:
                sent["Authorization"] = self._authorization
            response = await self._send(self._client.build_request(method, url, headers=sent, content=content))
            if response.status_code == 401 and attempt == 0 and not isinstance(content, AsyncIterator):
                challenge = response.headers.get("WWW-Authenticate", "")
                await response.aclose()
                await self._authenticate(challenge)
                continue
            if response.status_code < 400:
                return response
            detail = (await response.aread())[:300].decode(errors="replace")
            await response.aclose()
            if response.status_code == 401:
                raise AuthenticationError(f"registry {self._host} refused the credentials for {self._repository}")
            where = path if not path.startswith("http") else httpx.URL(path).path
            if response.status_code == 404:
                raise RegistryError(f"{self._host}/{self._repository}: {where.lstrip('/')} not found", 404)
            raise RegistryError(f"registry {self._host} answered {response.status_code} for {method} {where}: "
                                f"{detail}", response.status_code)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._client.send(request, stream=True)
        except httpx.TimeoutException:
            raise RegistryError(f"registry {self._host} did not answer in time ({request.url})") from None
        except httpx.HTTPError as error:
            raise RegistryError(f"cannot reach registry {self._host}: {error}") from None

    async def _authenticate(self, challenge: str) -> None:
        scheme, _, rest = challenge.partition(" ")
        parameters = dict(_CHALLENGE_PARAMETER.findall(rest))
        credentials = self._credentials
        if scheme.lower() == "basic":
            if credentials is None:
                raise AuthenticationError(
                    f"registry {self._host} requires credentials (basic auth): give credentials= "
                    "or log in with docker login"
                )
            self._authorization = _basic(credentials)
        elif scheme.lower() == "bearer" and "realm" in parameters:
            query = {"scope": f"repository:{self._repository}:{self._actions}"}
            if "service" in parameters:
                query["service"] = parameters["service"]
            request = self._client.build_request("GET", parameters["realm"], params=query)
            if credentials:
                request.headers["Authorization"] = _basic(credentials)
            response = await self._send(request)
            body = await response.aread()
            await response.aclose()
            if response.status_code >= 400:
                raise AuthenticationError(f"token service of {self._host} refused: {response.status_code}")
            try:
                document = json.loads(body)
                token = document.get("token") or document.get("access_token")
            except (ValueError, AttributeError):
                token = None
            if not isinstance(token, str):
                raise AuthenticationError(f"token service of {self._host} gave no token")
            self._authorization = f"Bearer {token}"
        else:
            raise AuthenticationError(f"registry {self._host} asks for unsupported authentication {challenge!r}")


def _basic(credentials: Credentials) -> str:
    token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
    return f"Basic {token}"
