"""``Image``: an image in the store, from a registry or a local source, and its root disk."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import anyio

from .._errors import BuildError, DigestMismatch, ManifestError
from .._groups import unwrap_single_error
from .._hooks import build_image, default_runtime
from .._network import NetworkOption
from .._volume import DEFAULT_VOLUME_SLOTS
from ..build.request import BuildRequest
from .builtin import BUILTIN_TAG, ensure_builtin_layout
from .digest import Digest
from .layers import Limits
from .load import load_images
from .manifest import (
    ACCEPTED_TYPES,
    HOST_PLATFORM,
    ImageConfig,
    Manifest,
    Platform,
    parse_config,
    parse_document,
    parse_media_type,
)
from .reference import Reference
from .registry import Credentials, RegistryClient, docker_config_credentials
from .rootdisk import build_root_disk
from .sources import check_platform, import_docker_archive, import_oci_archive, import_oci_layout
from .store import ImageRecord, Store

if TYPE_CHECKING:
    from ..snapshot.snapshot import Snapshot

# Layers fetched at once from one registry.
PARALLEL_BLOBS = 3

Progress = Callable[[int, int, int, int], None]
"""``progress(bytes_done, bytes_total, blobs_done, blobs_total)`` while a pull downloads."""


@dataclass(frozen=True)
class Image:
    """An image whose manifest, config and layers are in the store; ``config`` says how to run it."""

    name: str
    manifest_digest: Digest
    manifest: Manifest
    config_digest: Digest
    config: ImageConfig
    store: Store

    @classmethod
    def from_record(cls, record: ImageRecord, store: Store) -> Image:
        manifest = parse_document(store.read_document(record.manifest))
        if not isinstance(manifest, Manifest):
            raise ManifestError(f"{record.name}: the store holds an index where a manifest should be")
        config = parse_config(store.read_document(record.config))
        return cls(record.name, record.manifest, manifest, record.config, config, store)

    @classmethod
    def local(cls, reference: str, *, store: Store | None = None) -> Image | None:
        """The image the store knows by ``reference`` (as pulled or loaded, or a loaded image's digest), or None."""
        store = store or Store()
        record = store.lookup(reference if Digest.is_digest(reference) else str(Reference.parse(reference)))
        return cls.from_record(record, store) if record is not None else None

    @classmethod
    async def resolve(cls, reference: str | None = None, *, insecure: bool = False) -> Image:
        """The built-in image for None; else the stored image ``reference`` names, pulled if missing."""
        if reference is None:
            return await cls.builtin()
        return cls.local(reference) or await cls.pull(reference, insecure=insecure)

    @classmethod
    async def pull(
        cls,
        reference: str,
        *,
        platform: str = str(HOST_PLATFORM),
        credentials: Credentials | None = None,
        insecure: bool = False,
        store: Store | None = None,
        progress: Progress | None = None,
    ) -> Image:
        """Fetch ``reference`` (``busybox``, ``host:port/name:tag``, ``name@sha256:...``) into the store.

        Credentials default to docker's config file. Every manifest and blob is
        verified against its digest before it is stored. Raises
        :class:`RegistryError` (unreachable, refused), :class:`AuthenticationError`,
        :class:`PlatformNotFound` (listing what the index offers), :class:`DigestMismatch`.
        """
        ref = Reference.parse(reference)
        wanted = Platform.parse(platform)
        target: Store = store if store is not None else await anyio.to_thread.run_sync(Store)
        if credentials is None:
            credentials = docker_config_credentials(ref.registry)
        async with RegistryClient(ref, credentials=credentials, insecure=insecure) as client:
            body, media_type, claimed = await client.manifest(ref.target, ACCEPTED_TYPES)
            digest = _verified_manifest_digest(body, ref, claimed)
            document = parse_document(body, media_type)
            while not isinstance(document, Manifest):
                chosen = document.select(wanted)
                body, media_type, _ = await client.manifest(str(chosen.digest), ACCEPTED_TYPES)
                if Digest.of(body, chosen.digest.algorithm) != chosen.digest:
                    raise DigestMismatch(f"{ref}: manifest for {wanted} does not match its digest {chosen.digest}")
                digest, document = chosen.digest, parse_document(body, media_type)
            manifest = document
            await _fetch_blobs(client, target, manifest, str(ref), progress)
        config_data = await anyio.to_thread.run_sync(target.read_document, manifest.config.digest)
        check_platform(config_data, wanted)
        record = ImageRecord(str(ref), digest, manifest.config.digest)
        await anyio.to_thread.run_sync(target.put, body, digest, f"{ref} manifest")
        await anyio.to_thread.run_sync(target.tag, record)
        return cls.from_record(record, target)

    @classmethod
    async def builtin(cls, *, store: Store | None = None) -> Image:
        """The project's own busybox image, built from Debian's ``busybox-static``: no registry needed."""

        def builtin_layout(_: Path, tag: str | None, platform: Platform, target: Store) -> ImageRecord:
            return import_oci_layout(ensure_builtin_layout(), tag, platform, target)

        return await cls._import(builtin_layout, Path(), BUILTIN_TAG, str(HOST_PLATFORM), store)

    @classmethod
    async def from_oci_layout(
        cls, path: str | os.PathLike[str], tag: str | None = None, *, platform: str = str(HOST_PLATFORM),
        store: Store | None = None,
    ) -> Image:
        """The image ``tag`` names (or the only one) in an OCI image layout directory."""
        return await cls._import(import_oci_layout, Path(path), tag, platform, store)

    @classmethod
    async def from_docker_archive(
        cls, path: str | os.PathLike[str], tag: str | None = None, *, platform: str = str(HOST_PLATFORM),
        store: Store | None = None,
    ) -> Image:
        """The image ``tag`` names (``name:tag``, or the only one) in a ``docker save`` tarball."""
        return await cls._import(import_docker_archive, Path(path), tag, platform, store)

    @classmethod
    async def from_oci_archive(
        cls, path: str | os.PathLike[str], tag: str | None = None, *, platform: str = str(HOST_PLATFORM),
        store: Store | None = None,
    ) -> Image:
        """The image ``tag`` names in a tar of an OCI layout.

        ``tag`` is matched against ``org.opencontainers.image.ref.name``; without it, the layout's only image.
        """
        return await cls._import(import_oci_archive, Path(path), tag, platform, store)

    @classmethod
    async def load(
        cls, path: str | os.PathLike[str], *, platform: str = str(HOST_PLATFORM), store: Store | None = None
    ) -> list[Image]:
        """Every image in an OCI layout directory, OCI archive or docker archive, as ``docker load`` does.

        Each is stored under the names its source gives it (normalised as docker does:
        ``app:1`` is ``docker.io/library/app:1``), an unnamed one under its manifest
        digest, so :meth:`local`, :meth:`resolve` and ``Machine.start`` find it by
        that name. Raises :class:`ImageError` for anything else or a damaged archive.
        """

        def run() -> list[Image]:
            chosen_store = store or Store()
            records = load_images(Path(path), Platform.parse(platform), chosen_store)
            return [cls.from_record(record, chosen_store) for record in records]

        return await anyio.to_thread.run_sync(run)

    @classmethod
    async def _import(
        cls,
        importer: Callable[[Path, str | None, Platform, Store], ImageRecord],
        path: Path,
        tag: str | None,
        platform: str,
        store: Store | None,
    ) -> Image:
        def run() -> Image:
            chosen_store = store or Store()
            return cls.from_record(importer(path, tag, Platform.parse(platform), chosen_store), chosen_store)

        return await anyio.to_thread.run_sync(run)

    @classmethod
    async def build(
        cls,
        context: str | os.PathLike[str],
        *,
        dockerfile: str | os.PathLike[str] | None = None,
        tag: str | None = None,
        build_args: Mapping[str, str] | None = None,
        target: str | None = None,
        no_cache: bool = False,
        network: NetworkOption = True,
        memory_mib: int = 1024,
        store: Store | None = None,
        output: TextIO | None = None,
    ) -> Image:
        """Build the Dockerfile ``dockerfile`` (default: ``CONTEXT/Dockerfile``) with ``context``, as ``docker build``.

        Each RUN runs in a microVM of the step's parent image (``memory_mib`` of
        memory, with ``network`` as ``Machine.start`` takes it, e.g. a :class:`Network`
        with an egress policy; none if False or the step says ``--network=none``);
        its root's changes become the step's layer. COPY and
        ADD layers are made on the host. Steps are cached by docker's key (``no_cache``
        skips the cache), so a rebuild with nothing changed starts no VM. The build's
        steps are written to ``output`` (stderr by default) as BuildKit writes them.
        The image is stored, named ``tag`` if given (else by its manifest digest).

        :raises BuildError: for a Dockerfile that cannot be built (its line says why) or a
            failed RUN (its exit status and output's tail); nothing is tagged then
        """
        root = Path(context)
        path = Path(dockerfile) if dockerfile is not None else root / "Dockerfile"
        try:
            text = await anyio.Path(path).read_text()
        except OSError as error:
            raise BuildError(f"cannot read the Dockerfile {path}: {error.strerror}") from None
        request = BuildRequest(root, text, tag, dict(build_args or {}), no_cache, network, target, memory_mib)
        chosen_store = store if store is not None else await anyio.to_thread.run_sync(Store)
        return await build_image(request, chosen_store, output)

    async def push(
        self, reference: str, *, credentials: Credentials | None = None, insecure: bool = False
    ) -> Digest:
        """Send this image to a registry as ``reference`` (``host:port/name:tag``); returns its manifest digest.

        Blobs the repository has already are not sent again. Credentials default to
        docker's config file. Raises :class:`RegistryError` or :class:`AuthenticationError`.
        """
        ref = Reference.parse(reference)
        if credentials is None:
            credentials = docker_config_credentials(ref.registry)
        body = await anyio.to_thread.run_sync(self.store.read_document, self.manifest_digest)
        media_type = parse_media_type(body)
        async with RegistryClient(ref, credentials=credentials, insecure=insecure, push=True) as client:
            for descriptor in (*self.manifest.layers, self.manifest.config):
                if not await client.has_blob(str(descriptor.digest)):
                    await client.upload_blob(str(descriptor.digest), self.store.blob_path(descriptor.digest),
                                             descriptor.size)
            await client.put_manifest(ref.target, body, media_type)
        return self.manifest_digest

    async def bake(
        self,
        *,
        warmup: Sequence[str] = (),
        wait_for_port: int | None = None,
        vcpus: int = 1,
        memory_mib: int = 256,
        network: NetworkOption = True,
        volume_slots: int = DEFAULT_VOLUME_SLOTS,
    ) -> Snapshot:
        """Boot this image once and snapshot it ready (cached), on the default runtime.

        Restore it with ``Machine.create(snapshot)``; see :meth:`Runtime.bake` for the options.
        """
        runtime = await default_runtime()
        return await runtime.bake(
            self, warmup=warmup, wait_for_port=wait_for_port, vcpus=vcpus, memory_mib=memory_mib, network=network,
            volume_slots=volume_slots,
        )

    async def root_disk(self, limits: Limits = Limits()) -> Path:
        """The image's read-only root filesystem (erofs), built once and cached by config digest."""
        return await anyio.to_thread.run_sync(build_root_disk, self.store, self.manifest, limits)


def _verified_manifest_digest(body: bytes, ref: Reference, claimed: str | None) -> Digest:
    if ref.digest is not None:
        wanted = Digest.parse(ref.digest)
        if Digest.of(body, wanted.algorithm) != wanted:
            raise DigestMismatch(f"{ref}: the registry's manifest does not have the digest asked for")
        return wanted
    digest = Digest.of(body)
    if claimed is not None and claimed.startswith("sha256:") and claimed != str(digest):
        raise DigestMismatch(f"{ref}: manifest digest {digest} is not the {claimed} the registry claims")
    return digest


async def _fetch_blobs(
    client: RegistryClient, store: Store, manifest: Manifest, name: str, progress: Progress | None
) -> None:
    wanted = [d for d in (manifest.config, *manifest.layers) if not store.has(d.digest)]
    total = sum(d.size for d in wanted)
    done = blobs_done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total, blobs_done, len(wanted))

    limiter = anyio.CapacityLimiter(PARALLEL_BLOBS)

    async def fetch(digest: Digest, size: int) -> None:
        async with limiter:
            with store.writer(digest, f"{name} blob {digest}", size) as writer:
                await client.blob(str(digest), writer, advance)
        nonlocal blobs_done
        blobs_done += 1
        advance(0)

    with unwrap_single_error():
        async with anyio.create_task_group() as tasks:
            for descriptor in wanted:
                tasks.start_soon(fetch, descriptor.digest, descriptor.size)
