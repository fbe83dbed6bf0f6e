"""An image-to-mesh model run as an external command (CRM, InstantMesh, TripoSR, ... in their own environments).

The command is a template; its placeholders are filled with absolute paths and it runs without a shell:

* ``{image}``: frame 1, matted, as an RGBA PNG (``{image_rgb}``: the same composited on white, for tools that
  want RGB; ``{image_grey}``: on 50% grey, as CRM's own preprocessing does);
* ``{outdir}``: an empty folder for the tool's output;
* ``{mesh}``: ``{outdir}/mesh.glb``, for tools that take an output file name.

After the command exits with status 0 the mesh is ``{mesh}`` if it exists, else the mesh file the tool wrote in
``{outdir}`` (GLB, glTF, OBJ, PLY; zip archives such as CRM's ``output3d.zip`` are unpacked first). Recipes are in
docs/text-to-4d.md.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np

from pla4d.media import save_png
from pla4d.render.mesh import Mesh, load_mesh

PLACEHOLDERS = ("image", "image_rgb", "image_grey", "outdir", "mesh")
_PREFERENCE = (".glb", ".gltf", ".obj", ".ply", ".off", ".stl")


class ExternalImageToMesh:
    def __init__(
        self, command: str, workdir: str | Path, cwd: str | None = None, timeout_s: float = 1800.0, up: str = "y"
    ) -> None:
        check_template(command)
        self.command, self.workdir, self.cwd, self.timeout_s, self.up = command, Path(workdir), cwd, timeout_s, up
        self.name = "external: " + command

    def __call__(self, image_rgba: np.ndarray, seed: int = 0) -> Mesh:
        work = self.workdir.resolve()
        if work.exists():
            shutil.rmtree(work)
        outdir = work / "out"
        outdir.mkdir(parents=True)
        paths = {
            "image": work / "frame1.png",
            "image_rgb": work / "frame1_white.png",
            "image_grey": work / "frame1_grey.png",
            "outdir": outdir,
            "mesh": outdir / "mesh.glb",
        }
        save_png(paths["image"], image_rgba)
        alpha = image_rgba[..., 3:]
        save_png(paths["image_rgb"], image_rgba[..., :3] * alpha + (1.0 - alpha))
        save_png(paths["image_grey"], image_rgba[..., :3] * alpha + 0.5 * (1.0 - alpha))
        argv = [part.format(**{k: str(v) for k, v in paths.items()}) for part in shlex.split(self.command)]
        log = work / "command.log"
        try:
            with open(log, "w") as out:
                result = subprocess.run(argv, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
                                        timeout=self.timeout_s, check=False)  # fmt: skip
        except FileNotFoundError:
            raise ValueError(f"image-to-mesh command not found: {argv[0]!r} (from {self.command!r})") from None
        except subprocess.TimeoutExpired:
            raise ValueError(f"image-to-mesh command ran past {self.timeout_s:.0f} s; its output: {log}") from None
        if result.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise ValueError(
                f"image-to-mesh command failed with status {result.returncode}: {' '.join(argv)}\n"
                + "\n".join("  " + line for line in tail)
                + f"\n(full output: {log})"
            )
        return load_mesh(find_mesh(paths["mesh"], outdir))

    def release(self) -> None:
        """Nothing stays loaded: the tool's process has exited."""


def check_template(command: str) -> None:
    """ValueError for a template with an unknown placeholder or no way to pass the image."""
    import string

    fields = {name for _, name, _, _ in string.Formatter().parse(command) if name is not None}
    unknown = fields - set(PLACEHOLDERS)
    if unknown:
        raise ValueError(f"unknown placeholder(s) {sorted(unknown)} in the mesh command; use {', '.join(PLACEHOLDERS)}")
    if not fields & {"image", "image_rgb", "image_grey"}:
        raise ValueError("the mesh command must take the image: put {image} (or {image_rgb} / {image_grey}) in it")
    if not fields & {"outdir", "mesh"}:
        raise ValueError("the mesh command must say where the mesh goes: put {mesh} or {outdir} in it")
    if not shlex.split(command):
        raise ValueError("the mesh command is empty")


def find_mesh(named: Path, outdir: Path) -> Path:
    """``named`` if the tool wrote it, else the preferred mesh file under ``outdir`` (archives unpacked)."""
    if named.is_file():
        return named
    for archive in sorted(outdir.rglob("*.zip")):
        with zipfile.ZipFile(archive) as z:
            target = archive.with_suffix("")
            for member in z.namelist():
                # Only plain relative names are unpacked (no absolute paths or "..").
                if member.startswith("/") or ".." in Path(member).parts:
                    continue
                z.extract(member, target)
    candidates = [p for p in outdir.rglob("*") if p.suffix.lower() in _PREFERENCE and p.is_file()]
    if not candidates:
        raise ValueError(f"the image-to-mesh command wrote no mesh file into {outdir}")
    return min(candidates, key=lambda p: (_PREFERENCE.index(p.suffix.lower()), len(p.parts), str(p)))
