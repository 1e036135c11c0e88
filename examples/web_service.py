"""Sandboxes over HTTP: each one a microVM, restored in a second or two from a baked snapshot.

Run it under any ASGI server, on asyncio or trio::

    uvicorn examples.web_service:app
    hypercorn --worker-class trio examples/web_service.py:app

Then::

    curl -X POST localhost:8000/sandboxes -d '{"timeout": 600}'          # -> {"id": "..."}
    curl -X POST localhost:8000/sandboxes/ID/exec -d '{"argv": ["uname", "-a"]}'
    curl -X PUT localhost:8000/sandboxes/ID/files/tmp/hello --data-binary @hello
    curl localhost:8000/sandboxes/ID/files/tmp/hello
    curl -X DELETE localhost:8000/sandboxes/ID

The server's lifespan owns one :class:`Runtime`: when the server stops, every
sandbox still running is closed with it.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from asupermachine import (
    ExecError,
    ExecTimeout,
    GuestFileError,
    GuestStopped,
    Image,
    ImageError,
    Machine,
    MachineClosed,
    Runtime,
    Snapshot,
)

log = logging.getLogger("web_service")


class Sandboxes:
    """The app's state: the runtime, the sandboxes it handed out, one baked snapshot per image."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # The runtime forgets a machine once it is closed; the app keeps its handle
        # until it is deleted, so a sandbox that expired answers 410, not 404.
        self._handles: dict[str, Machine] = {}
        self._snapshots: dict[str | None, Snapshot] = {}
        self._baking = anyio.Lock()

    async def start(self, image: str | None, timeout: float | None) -> Machine:
        async with self._baking:  # two first requests for an image bake it once
            if image not in self._snapshots:
                self._snapshots[image] = await self.runtime.bake(await Image.resolve(image))
        vm = await self.runtime.restore(self._snapshots[image], timeout=timeout)
        self._handles[vm.id] = vm
        return vm

    def get(self, request: Request) -> Machine:
        try:
            return self._handles[request.path_params["id"]]
        except KeyError:
            raise HTTPException(404, "no such sandbox") from None

    async def delete(self, request: Request) -> None:
        await self.get(request).close()
        del self._handles[request.path_params["id"]]


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    async with Runtime() as runtime:
        log.info("sandbox service started")
        yield {"sandboxes": Sandboxes(runtime)}
        machines = runtime.machines()
        log.info("shutting down: closing %d live sandboxes", sum(not vm.closed for vm in machines))
    log.info("shut down: %d sandboxes left open", sum(not vm.closed for vm in machines))


async def create(request: Request) -> Response:
    body = await _json(request)
    try:
        vm = await request.state.sandboxes.start(body.get("image"), body.get("timeout"))
    except ImageError as error:
        raise HTTPException(400, str(error)) from None
    return JSONResponse({"id": vm.id}, status_code=201)


async def list_all(request: Request) -> Response:
    return JSONResponse([vm.id for vm in request.state.sandboxes.runtime.machines()])


async def health(request: Request) -> Response:
    live = sum(not vm.closed for vm in request.state.sandboxes.runtime.machines())
    return JSONResponse({"machines": live})


async def run(request: Request) -> Response:
    vm = request.state.sandboxes.get(request)
    body = await _json(request)
    argv = body.get("argv")
    if not (isinstance(argv, list) and argv and all(isinstance(word, str) for word in argv)):
        raise HTTPException(422, '"argv" must be a non-empty list of strings')
    stdin = body.get("stdin")
    result = await vm.exec(argv, stdin=None if stdin is None else stdin.encode(), timeout=body.get("timeout"))
    return JSONResponse({
        "exit_code": result.exit_code,
        "signal": result.signal,
        "stdout": result.stdout.decode(errors="replace"),
        "stderr": result.stderr.decode(errors="replace"),
    })


async def put_file(request: Request) -> Response:
    vm = request.state.sandboxes.get(request)
    await vm.write_file("/" + request.path_params["path"], await request.body())
    return Response(status_code=204)


async def get_file(request: Request) -> Response:
    vm = request.state.sandboxes.get(request)
    try:
        data = await vm.read_file("/" + request.path_params["path"])
    except GuestFileError as error:
        if error.errno == errno.ENOENT:
            raise HTTPException(404, str(error)) from None
        raise
    return Response(data, media_type="application/octet-stream")


async def delete(request: Request) -> Response:
    await request.state.sandboxes.delete(request)
    return Response(status_code=204)


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        raise HTTPException(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return JSONResponse({"error": error.detail}, status_code=error.status_code)


def error_status(status: int) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def respond(request: Request, error: Exception) -> Response:
        return JSONResponse({"error": str(error)}, status_code=status)

    return respond


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/health", health),
            Route("/sandboxes", list_all, methods=["GET"]),
            Route("/sandboxes", create, methods=["POST"]),
            Route("/sandboxes/{id}", delete, methods=["DELETE"]),
            Route("/sandboxes/{id}/exec", run, methods=["POST"]),
            Route("/sandboxes/{id}/files/{path:path}", put_file, methods=["PUT"]),
            Route("/sandboxes/{id}/files/{path:path}", get_file, methods=["GET"]),
        ],
        exception_handlers={
            HTTPException: http_error,
            MachineClosed: error_status(410),  # closed, deleted or past its timeout
            GuestStopped: error_status(410),  # the guest ended by itself (say, poweroff)
            ExecError: error_status(422),  # no such program, say
            ExecTimeout: error_status(504),
        },
        lifespan=lifespan,
    )


if not log.handlers:  # servers configure their own loggers, not ours
    log.addHandler(logging.StreamHandler())
    log.setLevel(logging.INFO)

app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app)
