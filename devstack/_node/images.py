"""Images on the node without a registry: the sandbox ("pause") image built locally from a static
binary, and podman's images (the project image from ``make image``) imported into containerd.

Both go through an OCI archive cached under ``~/.cache/routing-registry/images``, keyed by content
(the pause binary's hash, podman's image id), so a rebuilt image is imported again and an
unchanged one is not saved twice.
"""

from __future__ import annotations

import shutil
import tempfile
from functools import cache
from pathlib import Path

from devstack._binaries import cache_dir
from devstack._errors import StackError
from devstack._node.host import NodePaths, node_binaries, run

__all__ = [
    "DEFAULT_NODE_IMAGE",
    "ctr",
    "image_present",
    "import_image",
    "import_node_images",
    "pause_archive",
    "pause_ref",
]

DEFAULT_NODE_IMAGE = "localhost/routing-registry:dev"
"""What ``make image`` builds (podman's name for ``routing-registry:dev``)."""


def ctr(paths: NodePaths, *args: str, check: bool = True, timeout: float = 300.0) -> str:
    """``ctr`` against the node's containerd, in the namespace kubelet uses; its stdout."""
    done = run(
        ["ctr", "--address", str(paths.socket), "--namespace", "k8s.io", *args],
        what="containerd", check=check, timeout=timeout,
    )  # fmt: skip
    return done.stdout


@cache
def pause_ref() -> tuple[str, Path]:
    """The sandbox image's name, tagged by the pause binary's content, and that binary (built,
    or found built, once per process)."""
    binary = node_binaries(["routing-pause"])["routing-pause"]
    tag = binary.parent.name.removeprefix("routing-pause-")
    return f"localhost/routing-pause:{tag}", binary


def pause_archive(ref: str, binary: Path) -> Path:
    """The pause image as an OCI archive, built with podman once and cached by content."""
    archive = cache_dir() / "images" / f"{ref.rsplit('/', 1)[1].replace(':', '-')}.oci.tar"
    if archive.is_file():
        return archive
    if shutil.which("podman") is None:
        raise StackError("containerd: podman is needed once to build the local pause image")
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy2(binary, Path(tmp) / "pause")
        (Path(tmp) / "Containerfile").write_text(
            'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n'
        )
        run(["podman", "build", "--quiet", "--tag", ref, tmp], what="pause image", timeout=300)
        _save_archive(ref, archive, what="pause image", timeout=300)
    return archive


def image_present(state_dir: Path, ref: str) -> bool:
    return ref in ctr(NodePaths(state_dir), "images", "ls", "--quiet").split()


def import_image(state_dir: Path, ref: str) -> Path:
    """Import podman's image ``ref`` into the node's containerd; cached by podman's image id.

    Raises with the fix when podman does not have it (``make image`` builds it).
    """
    inspect = run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", ref], what="image", check=False
    )
    if inspect.returncode != 0:
        raise StackError(
            f"image {ref} is not in podman's store ({inspect.stderr.strip()}); build it first "
            "with `make image`"
        )
    image_id = inspect.stdout.strip()[:16]
    name = ref.rsplit("/", 1)[-1].replace(":", "-")
    archive = cache_dir() / "images" / f"{name}-{image_id}.oci.tar"
    if not archive.is_file():
        archive.parent.mkdir(parents=True, exist_ok=True)
        _save_archive(ref, archive, what="image", timeout=600)
        for older in archive.parent.glob(f"{name}-*.oci.tar"):
            if older != archive:
                older.unlink()  # one archive per image name: the cache does not grow per build
    ctr(NodePaths(state_dir), "images", "import", str(archive), timeout=600)
    return archive


def _save_archive(ref: str, archive: Path, *, what: str, timeout: float) -> None:
    """podman's image ``ref`` saved as an OCI archive; written aside, then renamed into place."""
    part = archive.with_suffix(".part")
    run(
        ["podman", "save", "--format", "oci-archive", "--output", str(part), ref],
        what=what, timeout=timeout,
    )  # fmt: skip
    part.replace(archive)


def import_node_images(state_dir: Path, refs: list[str] | None) -> list[str]:
    """Import ``refs`` into the node; with None, the project image when podman has it."""
    if refs is None:
        if (
            shutil.which("podman") is None
            or run(
                ["podman", "image", "exists", DEFAULT_NODE_IMAGE], what="image", check=False
            ).returncode
            != 0
        ):
            return []
        refs = [DEFAULT_NODE_IMAGE]
    for ref in refs:
        import_image(state_dir, ref)
    return refs
