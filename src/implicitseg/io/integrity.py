"""Is an image file's voxel data all there? Checks that run before SimpleITK reads a file.

SimpleITK's NIfTI reader fills what a cut-short gzip stream did not hold with zeros (and reads a corrupt stream as
noise), and its MetaImage reader reports a short file as "No such file or directory". So, before reading:

- NIfTI (``.nii``, ``.nii.gz``): the bytes after the header's ``vox_offset`` must hold every voxel that ``dim`` and
  ``bitpix`` declare; a gzip stream must end properly, its checksums matching (it is decompressed once, piece by
  piece, and counted); float voxels must be finite (SimpleITK reads a NaN in a NIfTI file as 0);
- NRRD (``.nrrd``, or ``.nhdr`` and its data file): gzip-encoded data must end properly, checksums matching (the
  NRRD reader counts the voxels itself);
- MetaImage (``.mha``, or ``.mhd`` and its data file): compressed data must hold the ``CompressedDataSize`` bytes
  the header declares, raw data every voxel of ``DimSize`` × ``ElementNumberOfChannels`` × ``ElementType``.

Problems raise :class:`InputError` naming the file: "truncated file" when the data ends early, "damaged file" when a
stream does not decompress. A header these checks do not understand is left to SimpleITK.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from implicitseg.errors import InputError, NonFiniteError

GZIP_MAGIC = b"\x1f\x8b"
READ_BYTES = 1 << 20
"""Compressed bytes read at a time."""
INFLATE_BYTES = 1 << 24
"""Most decompressed bytes held at a time (a mostly-zero labelmap inflates a thousandfold)."""
TEXT_HEADER_BYTES = 1 << 16
"""Where the text header of an NRRD or MetaImage file is looked for."""
METAIMAGE_TYPE_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
                        "MET_FLOAT": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_DOUBLE": 8}
"""Bytes per component of the MetaImage element types whose size does not depend on the writer's platform."""


def check_image_file(path: Path, *, allow_nonfinite: bool = False) -> None:
    """Raise :class:`InputError` when the voxel data of the image file ``path`` ends before its header says, or
    its compressed stream is damaged, and :class:`NonFiniteError` for NaN or infinite NIfTI voxels unless
    ``allow_nonfinite`` (see the module doc). Formats without such a check pass."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        _check_nifti(path, allow_nonfinite)
    elif name.endswith((".nrrd", ".nhdr")):
        _check_nrrd(path)
    elif name.endswith((".mha", ".mhd")):
        _check_metaimage(path)


def _inflate(path: Path, offset: int, consume: Callable[[bytes], None]) -> bool:
    """Decompress the gzip or zlib stream that starts at byte ``offset`` of ``path``, and any gzip members that follow
    it (bytes after a complete stream that start no member are ignored, as zlib's own readers do), handing each
    decompressed piece to ``consume``. Returns whether the stream ended properly (False: it is cut short). Data that
    do not decompress (or whose checksum does not match) raise "damaged file"."""
    decompressor = zlib.decompressobj(wbits=47)  # 32 + 15: a gzip or a zlib header, whichever is there
    with open(path, "rb") as handle:
        handle.seek(offset)
        while data := handle.read(READ_BYTES):
            while data:
                if decompressor.eof:
                    if not data.startswith(GZIP_MAGIC):
                        return True
                    decompressor = zlib.decompressobj(wbits=47)
                try:
                    piece = decompressor.decompress(data, INFLATE_BYTES)
                    while True:
                        consume(piece)
                        if len(piece) < INFLATE_BYTES and not decompressor.unconsumed_tail:
                            break
                        piece = decompressor.decompress(decompressor.unconsumed_tail, INFLATE_BYTES)
                except zlib.error as error:
                    raise InputError(f"{path}: damaged file: its compressed data does not decompress "
                                     f"({error})") from None
                data = decompressor.unused_data if decompressor.eof else b""
    return decompressor.eof


@dataclass(frozen=True)
class NiftiLayout:
    """Where a NIfTI file's voxels are: ``offset`` (bytes from the start of the uncompressed file), ``voxel_bytes``
    (how many), and ``float_dtype`` (numpy dtype of float voxels, None for other types)."""

    offset: int
    voxel_bytes: int
    float_dtype: np.dtype | None


NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}
"""NIfTI ``datatype`` codes of real float voxels → numpy type (without byte order)."""


def nifti_layout(header: bytes) -> NiftiLayout | None:
    """What a NIfTI-1 or NIfTI-2 header (its first 348 / 540 bytes) declares; None when ``header`` is neither."""
    for order in "<>":
        if len(header) < 4:
            return None
        size = struct.unpack_from(order + "i", header)[0]
        if size == 348 and len(header) >= 348:
            dims = struct.unpack_from(order + "8h", header, 40)
            datatype, bitpix = struct.unpack_from(order + "2h", header, 70)
            offset, minimum = struct.unpack_from(order + "f", header, 108)[0], 352
        elif size == 540 and len(header) >= 540:
            datatype, bitpix = struct.unpack_from(order + "2h", header, 12)
            dims = struct.unpack_from(order + "8q", header, 16)
            offset, minimum = struct.unpack_from(order + "q", header, 168)[0], 544
        else:
            continue
        n_dims = dims[0]
        if not 1 <= n_dims <= 7 or bitpix <= 0 or bitpix % 8 or min(dims[1 : n_dims + 1]) < 1 \
                or not math.isfinite(offset):
            return None
        float_type = NIFTI_FLOAT_TYPES.get(datatype)
        return NiftiLayout(max(int(offset), minimum), math.prod(dims[1 : n_dims + 1]) * bitpix // 8,
                           None if float_type is None else np.dtype(order + float_type))
    return None


class _NiftiScan:
    """Consumes a NIfTI file's bytes in pieces: counts them, reads the header from the first ones, and notes whether
    any float voxel is NaN or infinite (SimpleITK's NIfTI reader turns those into 0)."""

    def __init__(self) -> None:
        self.length = 0
        self.header = b""
        self.layout: NiftiLayout | None = None
        self.nonfinite = False
        self._carry = b""

    def __call__(self, piece: bytes) -> None:
        start = self.length
        self.length += len(piece)
        if self.layout is None and len(self.header) < 540:
            self.header += piece[: 540 - len(self.header)]
            self.layout = nifti_layout(self.header) if len(self.header) >= 348 else None
        layout = self.layout
        if layout is None or layout.float_dtype is None or self.nonfinite:
            return
        voxels = self._carry + piece[max(layout.offset - start, 0): max(layout.offset + layout.voxel_bytes - start, 0)]
        whole = len(voxels) // layout.float_dtype.itemsize * layout.float_dtype.itemsize
        self._carry = voxels[whole:]
        self.nonfinite = not np.all(np.isfinite(np.frombuffer(voxels[:whole], dtype=layout.float_dtype)))


def _check_nifti(path: Path, allow_nonfinite: bool) -> None:
    scan = _NiftiScan()
    with open(path, "rb") as handle:
        compressed = handle.read(2) == GZIP_MAGIC
    if compressed:
        complete = _inflate(path, 0, scan)
    else:
        with open(path, "rb") as handle:
            while piece := handle.read(INFLATE_BYTES):
                scan(piece)
        complete = True
    layout = scan.layout
    if layout is None:
        if not complete:
            raise InputError(f"{path}: truncated file: its gzip stream ends early")
        return
    if not complete or scan.length < layout.offset + layout.voxel_bytes:
        how = "" if complete else "the gzip stream ends early: "
        raise InputError(f"{path}: truncated file: {how}{max(scan.length - layout.offset, 0):,} of the "
                         f"{layout.voxel_bytes:,} bytes of voxel data its header declares are there")
    if scan.nonfinite and not allow_nonfinite:
        raise NonFiniteError(f"{path}: image holds NaN or infinite intensities")


def _header_fields(text: bytes, separator: str) -> dict[str, str]:
    """``key<separator>value`` lines of a text header, keys lower case without spaces (comments and other lines
    skipped)."""
    fields = {}
    for line in text.decode("latin-1").splitlines():
        if not line.startswith("#") and separator in line:
            key, value = line.split(separator, 1)
            fields[key.strip().lower().replace(" ", "")] = value.strip()
    return fields


def _header_start(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(TEXT_HEADER_BYTES)


def _data_file(path: Path, name: str | None) -> Path | None:
    """The one file a detached header names (None for lists and name patterns of several files); raises
    :class:`InputError` when it is missing."""
    if name is None or name.startswith("LIST") or "%" in name or " " in name:
        return None
    target = path.parent / name
    if not target.is_file():
        raise InputError(f"{path}: its data file {name} is missing")
    return target


def _check_nrrd(path: Path) -> None:
    start = _header_start(path)
    header_end = start.find(b"\n\n")  # an attached header ends at its first empty line, its data follow
    fields = _header_fields(start if header_end < 0 else start[:header_end], ": ")
    if fields.get("encoding", "").lower() not in ("gzip", "gz") or fields.get("lineskip", "0") != "0":
        return
    detached = fields.get("datafile")
    target = _data_file(path, detached) if detached is not None else path
    if target is None or (detached is None and header_end < 0):
        return
    if not _inflate(target, 0 if detached is not None else header_end + 2, len):
        where = f" (in its data file {target.name})" if detached is not None else ""
        raise InputError(f"{path}: truncated file: its gzip-compressed voxel data ends early{where}")


def _check_metaimage(path: Path) -> None:
    start = _header_start(path)
    key_at = start.find(b"ElementDataFile")  # the header's last line; LOCAL data follow it
    line_end = start.find(b"\n", key_at)
    if key_at < 0 or line_end < 0:
        return
    fields = _header_fields(start[:line_end], "=")
    name = fields["elementdatafile"]
    target = path if name == "LOCAL" else _data_file(path, name)
    if target is None or fields.get("headersize", "0") != "0":
        return
    offset = line_end + 1 if name == "LOCAL" else 0
    compressed = fields.get("compresseddata", "false").lower() == "true"
    where = "" if name == "LOCAL" else f" (in its data file {name})"
    if compressed and "compresseddatasize" not in fields:
        if not _inflate(target, offset, len):
            raise InputError(f"{path}: truncated file: its compressed voxel data ends early{where}")
        return
    try:
        if compressed:
            expected = int(fields["compresseddatasize"])
        else:
            component_bytes = METAIMAGE_TYPE_BYTES.get(fields.get("elementtype", ""))
            if component_bytes is None:
                return
            channels = int(fields.get("elementnumberofchannels", "1"))
            expected = math.prod(int(n) for n in fields["dimsize"].split()) * channels * component_bytes
    except (KeyError, ValueError):
        return  # a header SimpleITK will judge
    available = target.stat().st_size - offset
    if available < expected:
        what = "compressed voxel data" if compressed else "voxel data"
        raise InputError(f"{path}: truncated file: {max(available, 0):,} of the {expected:,} bytes of {what} its "
                         f"header declares are there{where}")
