"""Where an experiment lives: a local folder, or a URI that pyarrow reads (s3://, gs://, hdfs://, ...).

One rule for every module: ``path(p)`` gives a ``pathlib.Path`` for a local folder (``file://`` URIs included)
and a ``UriPath`` for anything else; both answer the same small set of pathlib calls (``/``, ``name``,
``parent``, ``glob``, ``iterdir``, ``is_dir``, ``exists``, ``read_text``, ``rename``, ``mkdir``), so the
readers in tune_norm.experiment work on either. A URI keeps its query (``?endpoint_override=...&scheme=http``
for an S3 API elsewhere than AWS) through every join, so Ray and our readers reach the same store.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlsplit

from .errors import UserError

SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
MANGLED = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+:/[^/]")  # 's3:/b/k': pathlib.Path('s3://b/k') folds the '//'
SECRET_KEYS = ("secret_key", "session_token")  # pyarrow reads credentials from the query too: keep them out


def is_uri(path: object) -> bool:
    """True for 'scheme://...' other than file://, which names a local (or locally mounted) folder."""
    match = SCHEME.match(str(path))
    return bool(match) and match.group(1).lower() != "file"


def is_file_uri(path: object) -> bool:
    """'file:///mnt/x': the user's word that the folder is shared (e.g. NFS mounted at the same path everywhere)."""
    return str(path).lower().startswith("file://")


def local(path: str | Path) -> Path:
    """A local folder, absolute; 'file:///x' is /x."""
    text = str(path)
    if SCHEME.match(text):
        text = unquote(urlsplit(text).path)
    return Path(text).expanduser().resolve()


def check(uri: str) -> None:
    """Refuse a URI that carries a secret (it would be written into tune_norm.json and every report)."""
    query = parse_qs(urlsplit(uri).query)
    secret = [k for k in SECRET_KEYS if k in query]
    if secret:
        raise UserError(f"the storage URI holds {secret[0]}; keep credentials out of it (use AWS_SECRET_ACCESS_KEY "
                        "and friends, or an instance profile) so they are not written into the experiment's records")


def write_whole(f: Path | UriPath, data: bytes) -> None:
    """Write a file whole: through a temporary file and a rename on a local disk (a kill leaves the old file, never
    half of one); one PUT on object storage (atomic there)."""
    if isinstance(f, Path):
        tmp = f.with_name(f".{f.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(f)
    else:
        f.write_bytes(data)


def path(location: str | Path | UriPath) -> Path | UriPath:
    """A pathlib-like handle on ``location``: Path for local folders, UriPath for URIs."""
    if isinstance(location, UriPath):
        return location
    if MANGLED.match(str(location)):
        raise UserError(f"{location} has lost a '/' after its scheme; pass the URI as a string (scheme://...)")
    if not is_uri(location):
        return local(location)
    check(str(location))
    return UriPath(str(location))


def split(location: str) -> tuple[str, str]:
    """(parent, name) of an experiment folder, as Ray's RunConfig(storage_path, name) wants them."""
    if is_uri(location):
        p = UriPath(location)
        return str(p.parent), p.name
    folder = local(location)
    return str(folder.parent), folder.name


def normalized(location: str | Path) -> str:
    """The experiment folder as Ray and our readers should see it: URIs as given, less a trailing '/';
    local folders (and file:// URIs) as absolute paths."""
    return str(UriPath(str(location))) if is_uri(location) else str(local(location))


class UriPath:
    """A file or folder behind a URI, through pyarrow's filesystem for it; the query string rides along."""

    def __init__(self, uri: str, _fs=None):
        parts = urlsplit(uri)
        self.scheme, self.query = parts.scheme, parts.query
        self.key = (parts.netloc + "/" + parts.path.strip("/")).rstrip("/")  # pyarrow's path: bucket/key
        self._given_fs = _fs
        self._type = None  # pyarrow FileType, when a listing already told it

    def __str__(self) -> str:
        return f"{self.scheme}://{self.key}" + (f"?{self.query}" if self.query else "")

    def __repr__(self) -> str:
        return f"UriPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UriPath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: UriPath) -> bool:
        return self.key < other.key

    @cached_property
    def fs(self):
        if self._given_fs is not None:
            return self._given_fs
        import pyarrow.fs

        try:
            fs, _ = pyarrow.fs.FileSystem.from_uri(str(self))
        except (OSError, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError
            raise UserError(f"cannot open {self}: {str(e).splitlines()[0]}") from None
        return fs

    def _child(self, key: str) -> UriPath:
        out = UriPath.__new__(UriPath)
        out.scheme, out.query, out.key, out._given_fs, out._type = self.scheme, self.query, key, self._given_fs, None
        if "fs" in self.__dict__:
            out.__dict__["fs"] = self.__dict__["fs"]
        return out

    def __truediv__(self, name: str) -> UriPath:
        return self._child(f"{self.key}/{str(name).strip('/')}")

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def parent(self) -> UriPath:
        return self._child(str(PurePosixPath(self.key).parent))

    def expanduser(self) -> UriPath:
        return self

    def resolve(self) -> UriPath:
        return self

    def _info(self):
        import pyarrow.fs

        if self._type is not None:
            return self._type
        try:
            return self.fs.get_file_info(self.key).type
        except OSError:
            return pyarrow.fs.FileType.NotFound

    def exists(self) -> bool:
        import pyarrow.fs

        return self._info() != pyarrow.fs.FileType.NotFound

    def is_dir(self) -> bool:
        import pyarrow.fs

        return self._info() == pyarrow.fs.FileType.Directory

    def is_file(self) -> bool:
        import pyarrow.fs

        return self._info() == pyarrow.fs.FileType.File

    def iterdir(self) -> Iterator[UriPath]:
        import pyarrow.fs

        children = []
        for info in self.fs.get_file_info(pyarrow.fs.FileSelector(self.key, allow_not_found=True)):
            child = self._child(info.path)
            child._type = info.type
            children.append(child)
        return iter(sorted(children))

    def glob(self, pattern: str) -> Iterator[UriPath]:
        """Relative patterns with '*' per level ('checkpoint_*/state.pt'), as pathlib's glob."""
        found = [self]
        for part in pattern.split("/"):
            found = [c for f in found if f.is_dir() for c in f.iterdir() if fnmatch.fnmatchcase(c.name, part)]
        return iter(sorted(found))

    def read_bytes(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.key) as f:
                return f.read()
        except FileNotFoundError:
            raise
        except OSError as e:
            if not self.exists():
                raise FileNotFoundError(str(self)) from None
            raise OSError(f"cannot read {self}: {e}") from None

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        with self.fs.open_output_stream(self.key) as f:
            f.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no real folders; this checks that the bucket (or root) is there and writable."""
        try:
            self.fs.create_dir(self.key, recursive=True)
        except OSError as e:
            raise UserError(f"cannot create {self}: {str(e).splitlines()[0]}") from None

    def rename(self, target: UriPath) -> UriPath:
        """Move a file or a whole folder (object stores copy and delete)."""
        import pyarrow.fs

        if self.is_dir():
            pyarrow.fs.copy_files(self.key, target.key, source_filesystem=self.fs, destination_filesystem=target.fs)
            self.fs.delete_dir(self.key)
        else:
            self.fs.move(self.key, target.key)
        self._type = None
        return target
