"""Settings of the viewer: upload limits and server behaviour (frozen dataclasses, every field documented).

``recon app`` builds its flags from these fields (``recon.config``), so this module imports no torch; a value out
of range is a ``recon.errors.UserError`` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MB = 2**20


def _invalid(message: str) -> Exception:
    """A ``UserError`` (imported here: ``recon.errors`` imports torch, and ``recon app --help`` reads this module)."""
    from recon.errors import UserError

    return UserError(message)


@dataclass(frozen=True)
class AppLimits:
    """What one session may upload. Everything over a limit is refused with a message that names the limit."""

    max_images: int = 50
    """Images per reconstruction (also the number of frames sampled from a video); the pair count grows with
    the square of it for the ``complete`` graph."""
    max_file_mb: float = 30.0
    """Largest single image file."""
    max_upload_mb: float = 300.0
    """Largest total of one session's uploads (images, archives and videos as uploaded)."""
    max_zip_members: int = 500
    """Most entries (files and folders) in one zip archive."""
    max_zip_uncompressed_mb: float = 500.0
    """Largest total uncompressed size of one zip archive (checked on the declared sizes, then while
    extracting, since declared sizes can lie)."""
    max_zip_ratio: float = 100.0
    """Largest compression ratio of one zip entry over 1 MB; photos barely compress, zip bombs reach 1000+."""
    max_video_mb: float = 200.0
    """Largest video file."""
    video_fps: float = 1.0
    """Frames sampled per second of video (at most ``max_images`` frames)."""
    max_pixels: int = 60_000_000
    """Largest image in pixels (decompression-bomb guard); a 60 Mpx photo loads."""
    max_pending_upload_mb: float = 2000.0
    """Largest total of files uploaded by all clients and not yet ingested (the upload route refuses more)."""
    upload_claim_s: float = 600.0
    """An uploaded file that no session ingests within this time is deleted."""

    def __post_init__(self):
        for name in self.__dataclass_fields__:
            if getattr(self, name) <= 0:
                raise _invalid(f"AppLimits.{name} must be positive, got {getattr(self, name)!r}")
        if self.max_images < 2:
            raise _invalid("AppLimits.max_images must be at least 2 (a reconstruction needs two images)")


@dataclass(frozen=True)
class AppConfig:
    """How the app serves its users."""

    limits: AppLimits = field(default_factory=AppLimits)
    """Upload limits."""
    concurrency_limit: int = 1
    """Reconstructions running at once; the others wait in the queue (each holds a model's activations)."""
    max_queue: int = 32
    """Waiting requests beyond which new ones are refused with a 'queue full' message."""
    session_ttl_s: float = 3600.0
    """A session without any event for this long has its workspace deleted (never during a run); closing the
    tab deletes it at once (and cancels its run)."""
    device: str = "auto"
    """Torch device of inference and alignment: ``auto``, ``cpu`` or ``cuda[:k]``."""
    examples_dir: Path | None = None
    """Folder whose sub-folders of images are offered as one-click examples (default: the repository's
    ``demo_data`` when present)."""

    def __post_init__(self):
        if self.concurrency_limit < 1:
            raise _invalid(f"concurrency_limit must be >= 1, got {self.concurrency_limit}")
        if self.max_queue < 1:
            raise _invalid(f"max_queue must be >= 1, got {self.max_queue}")
        if self.session_ttl_s <= 0:
            raise _invalid(f"session_ttl_s must be positive, got {self.session_ttl_s}")
