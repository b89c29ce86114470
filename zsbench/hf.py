"""One resolver for Hugging Face-format models (CLIP text encoders, CLIP backbones, ...).

`resolve_hf_model` never downloads: a local folder is used as given, a hub id is looked up only in
the local Hugging Face cache, and anything else is a `ZsbenchError` that says where it looked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from zsbench.errors import ZsbenchError

__all__ = ["hf_cache_dir", "resolve_hf_model"]

# "name" or "owner/name" as the hub spells repository ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (HF_HUB_CACHE, HF_HOME, XDG)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", "./", "../", "~", "."))
        or "\\" in name
        or name.count("/") > 1
        or not _HUB_ID.match(name)
    )


def _how_to_fix(name: str) -> str:
    return (
        "Fix: pass a local folder written with `save_pretrained` (config.json plus weights and "
        "tokenizer files), or populate the Hugging Face cache on a machine with internet "
        f"(`huggingface-cli download {name}` or `from_pretrained({name!r})`) and copy the cache "
        "folder here (set HF_HOME or HF_HUB_CACHE to it). zsbench never downloads at run time."
    )


def resolve_hf_model(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """The local folder of a Hugging Face-format model; never downloads.

    1. an existing local folder is returned as given (resolved to an absolute path);
    2. otherwise a hub id ("openai/clip-vit-base-patch32") is looked up in the local HF cache only
       (`cache_dir`, else HF_HUB_CACHE / HF_HOME / ~/.cache/huggingface/hub);
    3. otherwise a `ZsbenchError` names the path and the cache it looked in and how to fix it.
    """
    name = os.fspath(name_or_path)
    if not name.strip():
        raise ZsbenchError("Empty model name: give a local model folder or a Hugging Face hub id.")
    local = Path(name).expanduser()
    if local.is_dir():
        return local.resolve()
    if local.exists():
        raise ZsbenchError(
            f"Model path {str(local)!r} is a file, but a Hugging Face model is a folder "
            "(config.json, weights, tokenizer files). Give the folder that "
            "`save_pretrained` wrote."
        )
    cache = Path(cache_dir).expanduser() if cache_dir is not None else hf_cache_dir()
    if _looks_like_path(name):
        raise ZsbenchError(
            f"Model folder {str(local.absolute())!r} does not exist (and {name!r} is not a hub "
            f"id to look up in the Hugging Face cache {str(cache)!r}). {_how_to_fix(name)}"
        )
    snapshot = _from_cache(name, revision, cache)
    if snapshot is not None:
        return snapshot
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    raise ZsbenchError(
        f"Model {name!r} was not found: no local folder {str(local.absolute())!r}, and no "
        f"snapshot{f' at revision {revision!r}' if revision else ''} of hub id {name!r} in the "
        f"Hugging Face cache {str(cache)!r}"
        f"{' (HF_HUB_OFFLINE is set)' if offline else ''}. {_how_to_fix(name)}"
    )


def _from_cache(repo_id: str, revision: str | None, cache: Path) -> Path | None:
    """The cached snapshot folder of `repo_id`, or None; local files only."""
    if not cache.is_dir():
        return None
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return _scan_cache(repo_id, revision, cache)
    try:
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=cache, local_files_only=True
        )
    except Exception:  # LocalEntryNotFoundError, a malformed id, an incomplete snapshot
        return None
    folder = Path(folder)
    return folder if folder.is_dir() else None


def _scan_cache(repo_id: str, revision: str | None, cache: Path) -> Path | None:
    """Fallback without huggingface_hub: models--owner--name/snapshots/<commit of the ref>."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    ref = revision or "main"
    ref_file = repo / "refs" / ref
    commit = ref_file.read_text().strip() if ref_file.is_file() else ref
    snapshot = repo / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None
