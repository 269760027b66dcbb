"""Files the bot uploads (documents, photos), kept so tests can download what users received."""

from __future__ import annotations

import hashlib
import mimetypes
import struct
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoredFile:
    file_id: str
    file_unique_id: str
    kind: str  # "document" or "photo"
    file_name: str | None
    mime_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


class FileStore:
    """Content-addressed: a broadcast of one upload to thousands of chats keeps one copy."""

    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}
        self._contents: dict[str, bytes] = {}

    def add(
        self, kind: str, data: bytes, file_name: str | None, mime_type: str | None
    ) -> StoredFile:
        digest = hashlib.sha256(data).hexdigest()
        name_digest = hashlib.sha256((file_name or "").encode()).hexdigest()
        file_id = f"{kind[:3].upper()}-{digest[:32]}-{name_digest[:8]}"
        existing = self._files.get(file_id)
        if existing:
            return existing
        if not mime_type or mime_type == "application/octet-stream":
            guessed = mimetypes.guess_type(file_name)[0] if file_name else None
            mime_type = guessed or "application/octet-stream"
        stored = StoredFile(
            file_id=file_id,
            file_unique_id=digest[:16],
            kind=kind,
            file_name=file_name,
            mime_type=mime_type,
            data=self._contents.setdefault(digest, data),
        )
        self._files[file_id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        return self._files.get(file_id)

    def clear(self) -> None:
        self._files.clear()
        self._contents.clear()


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, GIF or JPEG (PhotoSize needs them); (0, 0) when unknown."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width, height
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return 0, 0


def _jpeg_size(data: bytes) -> tuple[int, int]:
    index = 2
    while index + 9 < len(data):
        if data[index] != 0xFF:
            return 0, 0
        marker = data[index + 1]
        segment_length = struct.unpack(">H", data[index + 2 : index + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[index + 5 : index + 9])
            return width, height
        index += 2 + segment_length
    return 0, 0
