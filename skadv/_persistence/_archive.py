"""The skadv file format: a zip of ``skadv.json`` and ``weights.safetensors``.

``skadv.json`` holds the format name and version, the skadv and torch
versions, the description of the estimator and the SHA-256 checksums of both
members; ``weights.safetensors`` holds the autoencoders' weights. Writing is
atomic and deterministic; reading checks the format, the version and the
checksums before anything in the file is looked at.
"""

import contextlib
import hashlib
import json
import os
import secrets
import zipfile
import zlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save

FORMAT_NAME = "skadv-detector"
# Version 2 nests estimators in their parameters and fitted attributes;
# version 1 files (pipelines and guards laid out apart) are read too.
FORMAT_VERSION = 2
JSON_NAME = "skadv.json"
WEIGHTS_NAME = "weights.safetensors"
_CHECKSUM_FIELD = "sha256"


def _canonical_json(document):
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode("ascii")


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def weights_sha256(module):
    """SHA-256 of a module's state_dict: names, dtypes, shapes and bytes.

    Stored as ``model_sha256`` for the classifier of a saved pipeline, whose
    weights the file does not hold, so that :func:`load` can tell when it is
    given another model. Part of the file format: unlike
    ``skadv._torch_utils.model_fingerprint`` (a cache key), it must not
    change between skadv versions.
    """
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        if not isinstance(tensor, torch.Tensor):
            continue
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------
# Writing


def _write_atomically(path, members):
    """Write a zip of ``members`` to a temporary file, then rename it to ``path``.

    Entries carry a fixed timestamp, so saving the same estimator twice gives
    identical bytes.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # os.open applies the umask, as a plain open() would; mkstemp would not.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            with zipfile.ZipFile(file, "w") as archive:
                for name, data, compression in members:
                    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                    info.external_attr = 0o644 << 16
                    archive.writestr(info, data, compress_type=compression)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_archive(path, description, tensors):
    """Write an estimator's description and tensors to a skadv file."""
    from skadv import __version__

    weights = _safetensors_save(tensors, metadata={"format": "pt"})
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "skadv_version": __version__,
        "torch_version": torch.__version__,
        "estimator": description,
    }
    document[_CHECKSUM_FIELD] = {
        JSON_NAME: _sha256(_canonical_json(document)),
        WEIGHTS_NAME: _sha256(weights),
    }
    text = json.dumps(document, indent=1, sort_keys=True, allow_nan=False)
    _write_atomically(
        path,
        [
            (JSON_NAME, text.encode("ascii"), zipfile.ZIP_DEFLATED),
            (WEIGHTS_NAME, weights, zipfile.ZIP_STORED),
        ],
    )


# --------------------------------------------------------------------------
# Reading


def _not_skadv(path, reason):
    return ValueError(f"{path} is not a skadv file: {reason}.")


def _corrupted(path, member):
    return ValueError(
        f"{path} has been modified or corrupted: checksum mismatch in {member}."
    )


def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def _read_members(path):
    """Return (JSON document, weights bytes), with format, version and checksums
    checked."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if not {JSON_NAME, WEIGHTS_NAME} <= names:
                raise _not_skadv(
                    path, f"the archive holds no {JSON_NAME} and {WEIGHTS_NAME}"
                )
            members = {}
            for name in (JSON_NAME, WEIGHTS_NAME):
                try:
                    members[name] = archive.read(name)
                except (
                    zipfile.BadZipFile,
                    zlib.error,
                    EOFError,
                    OSError,
                    NotImplementedError,  # an unknown compression method
                    RuntimeError,  # an encrypted entry
                ) as exc:
                    # The zip's own CRC-32 catches most damage before SHA-256 does.
                    raise _corrupted(path, name) from exc
    except zipfile.BadZipFile as exc:
        raise _not_skadv(path, "not a zip archive") from exc
    try:
        document = json.loads(
            members[JSON_NAME].decode("utf-8"), parse_constant=_reject_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _not_skadv(path, f"{JSON_NAME} is not valid JSON") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise _not_skadv(path, f"{JSON_NAME} does not describe a {FORMAT_NAME}")
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _not_skadv(path, f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by skadv {document.get('skadv_version')} with "
            f"format version {version}; this skadv reads format version "
            f"{FORMAT_VERSION}: upgrade skadv."
        )
    checksums = document.pop(_CHECKSUM_FIELD, None)
    if not isinstance(checksums, dict):
        checksums = {}
    if checksums.get(JSON_NAME) != _sha256(_canonical_json(document)):
        raise _corrupted(path, JSON_NAME)
    if checksums.get(WEIGHTS_NAME) != _sha256(members[WEIGHTS_NAME]):
        raise _corrupted(path, WEIGHTS_NAME)
    return document, members[WEIGHTS_NAME]


def read_archive(path):
    """Return (JSON document, tensors on the CPU) of a skadv file.

    The format, version and checksums are checked first; the document has no
    checksum field left.
    """
    document, weights = _read_members(path)
    try:
        tensors = _safetensors_load(weights)
    except SafetensorError as exc:
        raise _not_skadv(path, f"{WEIGHTS_NAME} is not a safetensors file") from exc
    return document, tensors
