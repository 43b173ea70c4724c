"""The SQLite store of `fakescope scan` results: one row per (file content, model, settings).

Rows are written in small transactions in WAL mode, so a scan killed at any moment leaves a
consistent database holding every row committed so far, and a rerun scores only the rest.
Paths are stored as the file system's bytes (BLOB): names that are not UTF-8 survive.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .files import atomic_open
from .types import FakescopeError

DB_VERSION = 3  # 2 added `reason`; 3 the content credentials
MIGRATIONS = {  # from version: the statements that take it to the next
    1: ("ALTER TABLE results ADD COLUMN reason TEXT",),
    2: tuple(
        f"ALTER TABLE results ADD COLUMN {c} TEXT"
        for c in ("credentials", "credentials_origin", "credentials_signer")
    ),
}
SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,            -- sha256 of content_hash, model_hash, settings_hash
    path BLOB NOT NULL,              -- where the content was first seen, as file-system bytes
    content_hash TEXT NOT NULL,      -- sha256 of the file
    model_hash TEXT NOT NULL,
    settings_hash TEXT NOT NULL,
    fake_probability REAL,           -- NULL for no_face and error
    label TEXT NOT NULL,             -- fake, real, inconclusive, no_face or error
    faces INTEGER NOT NULL,
    error TEXT,                      -- one line, for label = error
    timings TEXT NOT NULL,           -- JSON: seconds per stage
    created TEXT NOT NULL,           -- ISO 8601, UTC
    reason TEXT,                     -- one line: why this label (the verdict's reason)
    credentials TEXT,                -- C2PA content credentials: none, trusted, untrusted, ...
    credentials_origin TEXT,         -- what they declare: generative AI, camera capture
    credentials_signer TEXT          -- the signing certificate's common name
);
CREATE INDEX IF NOT EXISTS results_scope ON results (model_hash, settings_hash);
CREATE TABLE IF NOT EXISTS configs (  -- what model_hash and settings_hash stand for
    hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,              -- model or settings
    json TEXT NOT NULL
);
"""
COLUMNS = (
    "key",
    "path",
    "content_hash",
    "model_hash",
    "settings_hash",
    "fake_probability",
    "label",
    "faces",
    "error",
    "timings",
    "created",
    "reason",
    "credentials",
    "credentials_origin",
    "credentials_signer",
)


def open_database(
    path: Path,
    schema: str,
    version: int,
    migrations: dict[int, tuple[str, ...]] | None = None,
    **options,
) -> sqlite3.Connection:
    """A SQLite file with `schema` at `version` (PRAGMA user_version), in WAL mode: an older
    file is migrated one step at a time (migrations[v] takes it from v to v + 1), a newer one
    refused. Every SQLite file fakescope keeps opens here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, **options)
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found > version:
        db.close()
        raise FakescopeError(f"{path}: database schema {found} is newer than this fakescope's")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "PRAGMA synchronous=NORMAL"
    )  # WAL + NORMAL: a killed process loses nothing committed
    with db:
        # A file from before user_version was set (0) has no table to migrate yet, or is new.
        for step in range(found, version) if found else ():
            for statement in (migrations or {})[step]:
                db.execute(statement)
        db.executescript(schema)
        db.execute(f"PRAGMA user_version={version}")
    return db


def digest(data: object) -> str:
    """sha256 of canonical JSON."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def display(text: str) -> str:
    """Printable text: bytes of non-UTF-8 names (surrogate escapes) shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Row:
    """The outcome for one input; key is None when the file itself could not be read."""

    path: str  # may hold surrogate escapes (os.fsdecode of a non-UTF-8 name)
    key: str | None
    content_hash: str | None
    label: str
    fake_probability: float | None = None
    faces: int = 0
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    created: str = field(default_factory=_now)
    reason: str | None = None  # why this label (inconclusive, no_face, ...)
    # The file's content credentials (Provenance.credentials, .origin, .signer); None in
    # rows from before they were read.
    credentials: str | None = None
    credentials_origin: str | None = None
    credentials_signer: str | None = None


class Store:
    """Results of one model and settings in a SQLite file; safe to share between threads."""

    def __init__(self, path: str | Path, model: object, settings: dict):
        self.path = Path(path)
        self.model_hash, self.settings_hash = digest(model), digest(settings)
        self._lock = (
            threading.Lock()
        )  # one connection, serialised: lookups come from worker threads
        try:
            # A store from before `reason` or the credentials: its rows keep NULLs there.
            self._db = open_database(self.path, SCHEMA, DB_VERSION, MIGRATIONS, timeout=60)
            with self._db:
                self._db.executemany(
                    "INSERT OR IGNORE INTO configs VALUES (?, ?, ?)",
                    [
                        (self.model_hash, "model", json.dumps(model, sort_keys=True)),
                        (self.settings_hash, "settings", json.dumps(settings, sort_keys=True)),
                    ],
                )
                # The keys this process's scan met: its export holds their rows only.
                self._db.execute("CREATE TEMP TABLE seen (key TEXT PRIMARY KEY)")
        except sqlite3.Error as error:
            raise FakescopeError(f"{self.path}: not a usable results database ({error})") from None

    def key(self, content_hash: str) -> str:
        return digest([content_hash, self.model_hash, self.settings_hash])

    def lookup(self, key: str) -> Row | None:
        with self._lock:
            found = self._db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM results WHERE key = ?", (key,)
            ).fetchone()
        return None if found is None else _row(found)

    def put(self, rows: Iterable[Row]) -> None:
        """Store rows in one transaction. A stored score is never replaced; an error row is
        (by a retry)."""
        values = [
            (
                r.key,
                os.fsencode(r.path),
                r.content_hash,
                self.model_hash,
                self.settings_hash,
                r.fake_probability,
                r.label,
                r.faces,
                None if r.error is None else display(r.error),
                json.dumps(r.timings),
                r.created,
                r.reason,
                r.credentials,
                r.credentials_origin,
                r.credentials_signer,
            )
            for r in rows
            if r.key is not None
        ]
        update = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
        with self._lock, self._db:
            self._db.executemany(
                f"INSERT INTO results ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))}) "
                f"ON CONFLICT (key) DO UPDATE SET {update} WHERE results.label = 'error'",
                values,
            )

    def note(self, keys: Iterable[str]) -> None:
        """Remember keys as part of this scan (see rows)."""
        with self._lock, self._db:
            self._db.executemany("INSERT OR IGNORE INTO seen VALUES (?)", [(k,) for k in keys])

    def rows(self, noted_only: bool = False) -> Iterator[Row]:
        """This model's and settings' rows, by path (streamed); noted_only: those noted."""
        only = " AND key IN (SELECT key FROM seen)" if noted_only else ""
        with self._lock:
            cursor = self._db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM results "
                f"WHERE model_hash = ? AND settings_hash = ?{only} ORDER BY path",
                (self.model_hash, self.settings_hash),
            )
        while True:
            with self._lock:
                chunk = cursor.fetchmany(1000)
            if not chunk:
                return
            yield from map(_row, chunk)

    def export_jsonl(self, out: str | Path, noted_only: bool = False) -> int:
        """Write the rows (see rows) as JSON lines, atomically; returns the count."""
        count = 0
        with atomic_open(out) as handle:
            for row in self.rows(noted_only):
                # ensure_ascii keeps surrogate escapes as \\udcXX: json.loads + os.fsencode give
                # the bytes back.
                handle.write(json.dumps(asdict(row)) + "\n")
                count += 1
        return count

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _row(values: tuple) -> Row:
    data = dict(zip(COLUMNS, values))
    return Row(
        os.fsdecode(data["path"]),
        data["key"],
        data["content_hash"],
        data["label"],
        data["fake_probability"],
        data["faces"],
        data["error"],
        json.loads(data["timings"]),
        data["created"],
        data["reason"],
        data["credentials"],
        data["credentials_origin"],
        data["credentials_signer"],
    )
