"""Build an image from a Dockerfile: every RUN in a microVM of the step's parent, COPY and ADD on the host.

A stage starts from an image (pulled if missing), the built-in image
(``asupermachine/builtin``), ``scratch`` or an earlier stage. Its root is kept
as a host directory once a step needs it (COPY's destination, a RUN's root
disk), each new layer applied to it with the hardened layer reader that checks
every pulled layer. A RUN boots the step's parent image, runs the command with
the stage's env, workdir and user, and takes the guest's root overlay's changes
as the step's layer (:meth:`Machine.export_changes`). Steps whose key the cache
knows reuse its layer without a VM. Nothing is tagged unless the whole build
succeeds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import anyio

from .._errors import BuildError, ImageError
from .._hooks import register_builder
from .._network import NetworkOption
from ..image.digest import Digest
from ..image.image import Image
from ..image.layers import LayerApplier
from ..image.manifest import HOST_PLATFORM, Descriptor, Manifest, Platform, parse_config, parse_document
from ..image.reference import Reference
from ..image.rootdisk import root_disk_of_tree
from ..image.store import ImageRecord, Store
from .cache import CachedStep, StepCache, step_key
from .context import BuildContext, matching_paths
from .copy_layer import CopyLayer, CopyOptions, Source
from .dockerfile import IGNORED, Dockerfile, Instruction, Stage, parse_dockerfile
from .image_state import OCI_LAYER_TAR, ImageState, Layer, now
from .metadata import Scope, apply_metadata, declared_args
from .progress import BuildProgress
from .request import BuildRequest
from .run_step import run_step
from .scoped import resolve_in
from .users import resolve_owner
from .words import expand, expand_words

BUILTIN_REFERENCE = "asupermachine/builtin"
"""What a FROM names the project's built-in busybox image by."""
SCRATCH = "scratch"
LAYER_STEPS = frozenset({"RUN", "COPY", "ADD", "WORKDIR"})


@dataclass
class _Built:
    """A stage as built so far: its scope, the key of its last step, and its root on the host once needed."""

    stage: Stage
    scope: Scope
    key: str
    tree: Path | None = None


class Builder:
    """One build: its stages in order, into ``store``."""

    def __init__(self, request: BuildRequest, store: Store, out: TextIO | None = None) -> None:
        self._request, self._store = request, store
        self._progress = BuildProgress(out)
        self._cache = StepCache(store)
        self._dockerfile: Dockerfile = parse_dockerfile(request.dockerfile)
        self._context = BuildContext(request.context)
        self._built: dict[str, _Built] = {}
        self._images: dict[str, _Built] = {}
        self._work = Path()

    async def build(self) -> Image:
        stages = self._needed_stages()
        with tempfile.TemporaryDirectory(dir=self._store.temporary, prefix="build-") as work:
            self._work = Path(work)
            for stage in stages:
                self._built[stage.name] = await self._build_stage(stage)
            final = self._built[stages[-1].name]
            return await anyio.to_thread.run_sync(self._store_image, final.scope.image, self._request.tag)

    def _needed_stages(self) -> list[Stage]:
        stages = self._dockerfile.stages
        target = self._dockerfile.stage(self._request.target) if self._request.target else stages[-1]
        if target is None:
            raise BuildError(f"no stage {self._request.target!r} in the Dockerfile")
        needed = {target.index}
        for stage in reversed(stages[: target.index + 1]):
            if stage.index not in needed:
                continue
            names = [stage.base, *(i.flags["from"] for i in stage.instructions if "from" in i.flags)]
            needed.update(found.index for name in names if (found := self._dockerfile.stage(name)) is not None
                          and found.index < stage.index)
        return [stage for stage in stages if stage.index in needed]

    # stages

    async def _build_stage(self, stage: Stage) -> _Built:
        count = len(stage.instructions) + 1
        label = f"[{stage.name} 1/{count}]" if not stage.name.isdigit() else f"[stage-{stage.name} 1/{count}]"
        base = self._expand_global(stage.base)
        self._progress.step(f"{label} FROM {base}")
        built = await self._start_stage(stage, base, stage.source.flags.get("platform"))
        self._progress.done()
        for position, instruction in enumerate(stage.instructions, start=2):
            title = label.replace(" 1/", f" {position}/")
            self._progress.step(f"{title} {instruction}")
            try:
                await self._step(built, instruction)
            except BuildError as error:
                self._progress.error(str(error))
                raise
            except ImageError as error:
                self._progress.error(str(error))
                raise instruction.fail(str(error)) from error
        return built

    def _expand_global(self, text: str) -> str:
        return expand(text, self._global_args())

    def _global_args(self) -> dict[str, str]:
        values: dict[str, str] = dict(_platform_args())
        for instruction in self._dockerfile.global_args:
            values.update(declared_args(instruction, values, self._request.build_args, {}))
        return values

    async def _start_stage(self, stage: Stage, base: str, platform: str | None) -> _Built:
        if platform is not None and Platform.parse(self._expand_global(platform)) != HOST_PLATFORM:
            raise stage.source.fail(f"only {HOST_PLATFORM} is built here: a RUN needs this host's KVM")
        earlier = self._built.get(base.lower())
        if earlier is not None:
            return replace(earlier, stage=stage, scope=replace(earlier.scope, args={}, cmd_set=False), tree=None)
        if base == SCRATCH:
            return _Built(stage, Scope(ImageState.scratch(HOST_PLATFORM)), step_key("", SCRATCH))
        image = await self._image(base)
        return _Built(stage, Scope(await self._image_state(image)), step_key("", str(image.manifest_digest)))

    async def _image(self, reference: str) -> Image:
        if reference == BUILTIN_REFERENCE:
            return await Image.builtin(store=self._store)
        local = Image.local(reference, store=self._store)
        return local or await Image.pull(reference, store=self._store)

    async def _image_state(self, image: Image) -> ImageState:
        document = await anyio.to_thread.run_sync(self._store.read_document, image.config_digest)
        return ImageState.from_image(document, image.manifest.layers)

    # steps

    async def _step(self, built: _Built, instruction: Instruction) -> None:
        keyword = instruction.keyword
        if keyword in IGNORED:
            self._progress.warn(IGNORED[keyword])
        elif keyword in LAYER_STEPS:
            await self._layer_step(built, instruction)
        else:
            built.scope = apply_metadata(built.scope, instruction, self._request.build_args, self._global_args())
            built.scope = replace(built.scope, image=built.scope.image.with_history(str(instruction),
                                                                                    built.scope.image.created))
            built.key = step_key(built.key, str(instruction), sorted(built.scope.args.items()))
            self._progress.done()

    async def _layer_step(self, built: _Built, instruction: Instruction) -> None:
        scope = built.scope
        if instruction.keyword == "WORKDIR":
            scope = apply_metadata(scope, instruction, self._request.build_args, self._global_args())
        copied = await self._copy_sources(scope, instruction) if instruction.keyword in ("COPY", "ADD") else None
        key = step_key(built.key, str(instruction), *await self._inputs(scope, instruction, copied))
        cached = None if self._request.no_cache else self._cache.get(key)
        if cached is not None:
            self._progress.cached()
        else:
            cached = await self._run_layer_step(built, scope, instruction, copied)
            self._cache.put(key, cached)
            self._progress.done()
        if built.tree is not None and cached.layer is not None:
            await self._apply(built.tree, cached.layer)
        image = scope.image.with_history(str(instruction), cached.created, cached.layer)
        built.scope, built.key = replace(scope, image=image), key

    async def _inputs(
        self, scope: Scope, instruction: Instruction, copied: tuple[list[Source], str] | None
    ) -> list[object]:
        """What besides the instruction decides the step's layer: RUN's environment, COPY's files."""
        if instruction.keyword == "RUN":
            return [sorted(scope.args.items()), bool(self._request.network), instruction.flags.get("network", "")]
        if copied is not None:
            sources, destination = copied
            return [destination, await anyio.to_thread.run_sync(_sources_digest, sources)]
        return [scope.workdir]

    async def _run_layer_step(
        self, built: _Built, scope: Scope, instruction: Instruction, copied: tuple[list[Source], str] | None
    ) -> CachedStep:
        tree = await self._tree(built)
        layer_path = self._work / "layer.tar"
        if instruction.keyword == "RUN":
            image = await anyio.to_thread.run_sync(self._store_image, scope.image, None)
            disk = await anyio.to_thread.run_sync(root_disk_of_tree, self._store, image.config_digest, tree)
            try:
                await run_step(image, scope, instruction, layer_path, self._progress,
                               network=self._network(instruction), memory_mib=self._request.memory_mib)
            finally:  # the parent's root disk served this step only: the next step's parent is another image
                await anyio.to_thread.run_sync(shutil.rmtree, disk.parent)
        elif instruction.keyword == "WORKDIR":
            if (tree / scope.workdir.lstrip("/")).is_dir():
                return CachedStep(None, now())
            await anyio.to_thread.run_sync(_directory_layer, layer_path, tree, scope.workdir)
        else:
            assert copied is not None, "a COPY's or ADD's sources are found before its key"
            options = await self._copy_options(built, scope, instruction)
            await anyio.to_thread.run_sync(_copy_layer, layer_path, tree, *copied, options)
        layer = await anyio.to_thread.run_sync(self._ingest, layer_path)
        return CachedStep(layer, now())

    def _network(self, instruction: Instruction) -> NetworkOption:
        mode = instruction.flags.get("network", "default")
        if mode not in ("default", "none"):
            raise instruction.fail(f"--network={mode} is not supported (default or none)")
        return self._request.network if mode == "default" else False

    async def _copy_sources(self, scope: Scope, instruction: Instruction) -> tuple[list[Source], str]:
        """A COPY's or ADD's sources and its absolute destination."""
        words = [scope.expand(word) for word in instruction.exec_form] if instruction.exec_form else \
            expand_words(instruction.arguments, scope.variables)
        if len(words) < 2:
            raise instruction.fail("needs a source and a destination")
        *patterns, destination = words
        origin = instruction.flags.get("from")
        if origin is None:
            sources = [source for pattern in patterns for source in self._context.sources(pattern)]
        else:
            scope_root = await self._from_tree(scope.expand(origin))
            sources = [Source(scope_root, path, keeps_owner=True)
                       for pattern in patterns for path in _matches(scope_root, pattern)]
        return sources, scope.absolute(destination)

    async def _copy_options(self, built: _Built, scope: Scope, instruction: Instruction) -> CopyOptions:
        """``--chown`` (names resolved in the stage's tree), ``--chmod``, and whether archives unpack."""
        owner = None
        if "chown" in instruction.flags:
            tree = await self._tree(built)
            owner = resolve_owner(scope.expand(instruction.flags["chown"]), _read(tree, "etc/passwd"),
                                  _read(tree, "etc/group"))
        mode = None
        if "chmod" in instruction.flags:
            text = scope.expand(instruction.flags["chmod"])
            try:
                mode = int(text, 8)
            except ValueError:
                raise instruction.fail(f"--chmod={text} is not an octal mode") from None
        unpack = instruction.keyword == "ADD" and "from" not in instruction.flags
        return CopyOptions(owner, mode, unpack_archives=unpack)

    async def _from_tree(self, origin: str) -> Path:
        """The root of COPY --from's stage or image, on the host."""
        earlier = self._built.get(origin.lower())
        if earlier is None:
            earlier = self._images.get(origin)
            if earlier is None:
                image = await self._image(origin)
                earlier = _Built(self._dockerfile.stages[0], Scope(await self._image_state(image)), "")
                self._images[origin] = earlier
        return await self._tree(earlier)

    # trees, layers and the store

    async def _tree(self, built: _Built) -> Path:
        """The stage's root on the host, made from its layers the first time it is needed."""
        if built.tree is None:
            tree = Path(tempfile.mkdtemp(dir=self._work, prefix="tree-"))
            tree.chmod(0o755)
            for layer in built.scope.image.layers:
                await self._apply(tree, layer)
            built.tree = tree
        return built.tree

    async def _apply(self, tree: Path, layer: Layer) -> None:
        def apply() -> None:
            with LayerApplier(tree) as applier, self._store.blob_path(layer.descriptor.digest).open("rb") as blob:
                applier.apply(blob, str(layer.descriptor.digest))

        await anyio.to_thread.run_sync(apply)

    def _ingest(self, path: Path) -> Layer:
        with path.open("rb") as file:
            digest, size = self._store.ingest(file)
        path.unlink()
        return Layer(Descriptor(OCI_LAYER_TAR, digest, size), digest)

    def _store_image(self, state: ImageState, tag: str | None) -> Image:
        config = state.config_document()
        manifest = state.manifest_document(config)
        config_digest, manifest_digest = Digest.of(config), Digest.of(manifest)
        self._store.put(config, config_digest, "the built image's config")
        self._store.put(manifest, manifest_digest, "the built image's manifest")
        parsed = parse_document(manifest)
        assert isinstance(parsed, Manifest)
        name = str(Reference.parse(tag)) if tag else str(manifest_digest)
        if tag:
            self._store.tag(ImageRecord(name, manifest_digest, config_digest))
        return Image(name, manifest_digest, parsed, config_digest, parse_config(config), self._store)


def _platform_args() -> dict[str, str]:
    """The ARGs BuildKit and buildah define for the platforms: this host's, for build and target alike."""
    platform = HOST_PLATFORM
    values = {}
    for prefix in ("BUILD", "TARGET"):
        values.update({f"{prefix}PLATFORM": str(platform), f"{prefix}OS": platform.os,
                       f"{prefix}ARCH": platform.architecture, f"{prefix}VARIANT": platform.variant})
    return values


def _matches(root: Path, pattern: str) -> list[Path]:
    found = matching_paths(root, pattern)
    if not found:
        raise BuildError(f"{pattern!r}: no such file or directory in the stage")
    return found


def _read(tree: Path, name: str) -> str:
    try:
        return resolve_in(tree, name).read_text(errors="replace")
    except OSError:
        return ""


def _sources_digest(sources: list[Source]) -> str:
    """A digest of the sources' names, kinds, modes, owners (if kept), link targets and contents; not times."""
    hasher = hashlib.sha256()
    for source in sources:
        paths = [source.path]
        if source.path.is_dir() and not source.path.is_symlink():
            paths += sorted(p for p in source.path.rglob("*") if not source.ignored(p))
        for path in paths:
            status = path.lstat()
            owner = (status.st_uid, status.st_gid) if source.keeps_owner else ()
            hasher.update(f"{path.relative_to(source.scope)}\0{status.st_mode}\0{owner}\0".encode())
            if path.is_symlink():
                hasher.update(os.readlink(path).encode())
            elif path.is_file():
                with path.open("rb") as file:
                    while chunk := file.read(1 << 20):
                        hasher.update(chunk)
    return hasher.hexdigest()


def _copy_layer(layer_path: Path, tree: Path, sources: list[Source], destination: str, options: CopyOptions) -> None:
    with tarfile.open(layer_path, "w", format=tarfile.PAX_FORMAT) as tar:
        CopyLayer(tree, tar, options).copy(sources, destination)


def _directory_layer(layer_path: Path, tree: Path, directory: str) -> None:
    """WORKDIR's layer: its directory and those above it that are missing, ``0755`` and root's."""
    parts = resolve_in(tree, directory).relative_to(tree).parts
    with tarfile.open(layer_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for depth in range(1, len(parts) + 1):
            if (tree.joinpath(*parts[:depth])).is_dir():
                continue
            info = tarfile.TarInfo("/".join(parts[:depth]))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, time.time()
            tar.addfile(info)


async def build(request: BuildRequest, store: Store, output: TextIO | None) -> Image:
    """Build ``request`` into ``store``, writing its steps to ``output`` (stderr by default)."""
    return await Builder(request, store, output).build()


register_builder(build)
