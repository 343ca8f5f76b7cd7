"""The model folders ComfyUI reads, and the file names it lists in them (its folder_paths.py).

A folder name ComfyUI does not know is silently ignored in extra_model_paths.yaml, and a file whose
extension is not in the folder's list is never offered: both are refused here, naming the valid ones.
"""

from __future__ import annotations

import posixpath

from gpuhost.model import UsageError

# folder_paths.supported_pt_extensions
PT_EXTENSIONS = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft")
# .gguf: the GGUF loader custom nodes add it to the folders they read
EXTRA_EXTENSIONS = (".gguf",)

# folder_paths.folder_names_and_paths: the model folders and the extensions each lists
FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": PT_EXTENSIONS,
    "configs": (".yaml",),
    "loras": PT_EXTENSIONS,
    "vae": PT_EXTENSIONS,
    "text_encoders": PT_EXTENSIONS,
    "diffusion_models": PT_EXTENSIONS,
    "clip_vision": PT_EXTENSIONS,
    "style_models": PT_EXTENSIONS,
    "embeddings": PT_EXTENSIONS,
    "diffusers": (),  # whole model directories: any file under them
    "vae_approx": PT_EXTENSIONS,
    "controlnet": PT_EXTENSIONS,
    "gligen": PT_EXTENSIONS,
    "upscale_models": PT_EXTENSIONS,
    "latent_upscale_models": PT_EXTENSIONS,
    "hypernetworks": PT_EXTENSIONS,
    "photomaker": PT_EXTENSIONS,
    "classifiers": (),
    "model_patches": PT_EXTENSIONS,
    "audio_encoders": PT_EXTENSIONS,
}
# folder_paths.map_legacy
LEGACY = {"clip": "text_encoders", "unet": "diffusion_models", "t2i_adapter": "controlnet"}


def canonical_folder(name: str, where: str = "manifest") -> str:
    """The folder ComfyUI files `name` under (legacy names mapped), or UsageError naming the valid ones."""
    folder = LEGACY.get(name, name)
    if folder not in FOLDERS:
        raise UsageError(
            f"{where}: {name!r} is not a model folder ComfyUI reads (it would be ignored)",
            f"Folders: {', '.join(FOLDERS)}; legacy names {', '.join(f'{k} -> {v}' for k, v in LEGACY.items())}.",
        )
    return folder


def check_file_name(folder: str, name: str, where: str = "manifest") -> str:
    """A relative file name inside a folder: no `..`, no absolute path, an extension ComfyUI lists there."""
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        raise UsageError(f"{where}: {name!r} is not a relative file name")
    normal = posixpath.normpath(name)
    if normal != name or normal.startswith("..") or "/../" in f"/{normal}/" or normal == ".":
        raise UsageError(f"{where}: {name!r} must be a plain relative path (no `..`, `.` or `//`)")
    extensions = FOLDERS[folder]
    if extensions and not name.lower().endswith(extensions + EXTRA_EXTENSIONS):
        raise UsageError(
            f"{where}: ComfyUI does not list {name!r} in {folder}/ (extension not one of its own)",
            f"Extensions for {folder}: {' '.join(extensions + EXTRA_EXTENSIONS)}.",
        )
    return normal


def split_model_path(path: str) -> tuple[str | None, str]:
    """(folder, name inside it) of a manifest path: `.../models/loras/x.safetensors` -> (loras, x.safetensors);
    `loras/sub/x.safetensors` -> (loras, sub/x.safetensors); a bare name -> (None, name)."""
    parts = [p for p in path.split("/") if p]
    heads = [i for i, p in enumerate(parts[:-2]) if p == "models"]
    if heads:
        return parts[heads[-1] + 1], "/".join(parts[heads[-1] + 2:])
    if not path.startswith("/") and len(parts) > 1 and LEGACY.get(parts[0], parts[0]) in FOLDERS:
        return parts[0], "/".join(parts[1:])
    return None, parts[-1] if parts else ""
