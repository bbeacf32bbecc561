"""Reading and writing the study database: :class:`Store` and :func:`open_store`.

A :class:`Store` wraps one SQLAlchemy engine. SQLite (a file in the output folder, the
default) and PostgreSQL (any ``postgresql://`` URL; the ``psycopg`` driver is used) behave the
same: the schema comes from the Alembic migrations shipped in ``tumorscope/study/migrations``,
applied on open.

Transactions. Every unit of work writes through :meth:`Store.transaction`: all of its rows
and its ``step_runs`` record are committed together or not at all, so an interrupted run
leaves either the old rows or the new ones, never half of each. :meth:`Store.replace` deletes
the rows a unit owns (selected by ``where``) and inserts the new ones: running a step again
replaces its rows instead of duplicating them.

Values. numpy scalars become Python numbers; NaN becomes NULL (SQLite cannot store NaN and
PostgreSQL would keep it, so NULL is the one representation both give back the same).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ExportError
from ..layout import database_path

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

__all__ = ["NotIn", "Store", "check_url", "default_url", "migrate", "open_store"]


@dataclass(frozen=True)
class NotIn:
    """A ``where`` value of :meth:`Store.replace` selecting every value but these: a unit that
    owns all the rows of a table but another step's (``assess`` owns every ``patterns`` row of
    a subject but the organ watch's)."""

    values: tuple[Any, ...]

    def __contains__(self, value: object) -> bool:
        return value not in self.values


#: Tables exported by :meth:`Store.export` (the analysis tables; pipeline memory excluded).
EXPORT_TABLES: tuple[str, ...] = (
    "subjects",
    "visits",
    "series",
    "lesions",
    "maps",
    "measurements",
    "assessments",
    "patterns",
    "alignments",
)


def default_url(out_dir: str | Path) -> str:
    """The default database: ``sqlite:///<out_dir>/tumorscope.sqlite`` (absolute path)."""
    return f"sqlite:///{database_path(Path(out_dir).resolve())}"


#: The databases tumorscope supports: the dialect of the URL scheme (before any ``+driver``).
SUPPORTED_SCHEMES: tuple[str, ...] = ("sqlite", "postgresql", "postgres")


def check_url(url: str) -> str:
    """The URL SQLAlchemy opens for a database URL the user gave (``postgresql://`` gets the
    psycopg driver); an unsupported scheme is an :class:`ExportError` naming ``--db``.

    Cheap (imports no database driver): the pipeline checks ``--db`` with it before it
    writes anything.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme.split("+", 1)[0] not in SUPPORTED_SCHEMES:
        raise ExportError(
            f"unsupported database {scheme or url!r}; tumorscope supports "
            "sqlite:///path/tumorscope.sqlite and postgresql://user@host/dbname",
            file=_redact(url),
            field="--db",
        )
    # "postgresql://" alone would pick psycopg2, which is not a dependency
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _db_error(what: str, exc: BaseException, url: str) -> ExportError:
    """An :class:`ExportError` for a database failure: what failed, the driver's first line,
    and the database named without its password."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return ExportError(f"{what} ({type(exc).__name__}: {first})", file=_redact(url))


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show it as given (it has no usable password)
        return url


def _engine(url: str) -> Engine:
    from sqlalchemy import create_engine, event
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 60})

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                # the sqlite3 module opens no transaction before DDL, so a run killed while the
                # schema is created left tables without Alembic's stamp ("table runs already
                # exists" on the next run). Let SQLAlchemy send BEGIN itself (the recipe of its
                # SQLite docs): every transaction, migrations included, is all or nothing.
                dbapi_conn.isolation_level = None
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA journal_mode=WAL")
                # WAL with synchronous=NORMAL never corrupts the database; a power cut may lose
                # the last commits, whose units the next run simply redoes (their memory is
                # gone, their files are rewritten). FULL would fsync at every unit's commit.
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

            @event.listens_for(engine, "begin")
            def _begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN")

        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise ExportError(
            f"not a usable database URL ({exc}); expected e.g. sqlite:///out/tumorscope.sqlite "
            "or postgresql://user@host/dbname",
            field="--db",
        ) from exc
    return engine


def migrate(engine: Engine, *, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the migrations shipped in the package.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    revision : str, default "head"
    """
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


_migrate = migrate  # the name ``migrate`` is also a keyword of Store


_PLAIN = (str, int, bool, type(None))


def _clean(value: Any) -> Any:
    """Python value for the database: numpy scalars unwrapped, NaN/inf to None."""
    t = type(value)
    if t in _PLAIN:  # fast paths: the bulk of a measurement table
        return value
    if t is float:
        return value if math.isfinite(value) else None
    if t is dict:  # (provenance and details: nested dicts of plain values, mostly)
        return {str(k): v if type(v) in _PLAIN else _clean(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [v if type(v) in _PLAIN else _clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


_PLAIN_TYPES = frozenset(_PLAIN)
_NUMBER_TYPES = frozenset((float, int, bool, type(None)))


def _clean_column(values: list[Any]) -> list[Any]:
    """:func:`_clean` of every value of a column; the column itself when that changes nothing
    (the common case, told apart without a Python call per value: a measurement table's
    152,000 rows, 1.2 M values, cost 1 s when cleaned one value at a time)."""
    types = set(map(type, values))
    if types <= _PLAIN_TYPES:
        return values
    # numbers only: they are all finite iff their sum is (an overflowing sum of finite
    # numbers only takes the slow path); filter(None) drops None, 0 and False
    if types <= _NUMBER_TYPES:
        if math.isfinite(sum(filter(None, values))):
            return values
        # NaN fails both comparisons: NaN and ±inf become None, as in _clean
        return [v if v is None or -math.inf < v < math.inf else None for v in values]
    return [_clean(v) for v in values]


def _columns(
    model: Any, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[tuple[str, ...], list[int], list[list[Any]]]]:
    """Rows as columns, grouped by the columns they give (in practice one group): for each
    group its column names, the indices of its rows, and its columns of raw values. Unknown
    columns are an :class:`ExportError` naming the table."""
    by_keys: dict[tuple[str, ...], list[int]] = {}
    if rows:
        first = tuple(rows[0])
        if sum(map(len, rows)) == len(first) * len(rows):  # one group, unless a key is missing
            try:
                columns = [[r[k] for r in rows] for k in first]
            except KeyError:
                pass
            else:
                by_keys[first] = list(range(len(rows)))
        if not by_keys:
            for i, r in enumerate(rows):
                by_keys.setdefault(tuple(r), []).append(i)
    known = set(model.__table__.c.keys())
    groups = []
    for keys, index in by_keys.items():
        unknown = set(keys) - known
        if unknown:
            raise ExportError(
                f"unknown column(s) {sorted(unknown)}; the table has {sorted(known)}",
                field=model.__tablename__,
            )
        if len(by_keys) == 1 and len(index) == len(rows) and keys == first:
            pass  # (the columns taken above)
        elif len(index) == len(rows):
            columns = [[r[k] for r in rows] for k in keys]
        else:
            columns = [[rows[i][k] for i in index] for k in keys]
        groups.append((keys, index, columns))
    return groups


def _check_owned(
    table: str,
    where: Mapping[str, Any],
    keys: tuple[str, ...],
    index: list[int],
    columns: list[list[Any]],
) -> None:
    """Every row must match ``where`` (:meth:`Store.replace`): else an :class:`ExportError`
    naming the first row that does not."""
    for k, v in where.items():
        values = columns[keys.index(k)] if k in keys else [None] * len(index)
        if isinstance(v, NotIn):
            bad = next((j for j, x in enumerate(values) if x not in v), None)
        elif values.count(v) == len(values):  # (== per value, in C)
            continue
        else:
            bad = next(j for j, x in enumerate(values) if x != v)
        if bad is not None:
            raise ExportError(
                f"row {index[bad]} has {k}={values[bad]!r}, outside the rows this step owns "
                f"({k}={v!r})",
                field=f"{table}.{k}",
            )


@functools.lru_cache(maxsize=64)
def _required(table: Any) -> frozenset[str]:
    """The columns an insert into ``table`` must give: NOT NULL, without a default."""
    return frozenset(
        c.name
        for c in table.columns
        if not c.nullable and c.default is None and c.server_default is None
    )


@functools.lru_cache(maxsize=256)
def _upsert_statement(dialect: str, table: Any, keys: tuple[str, ...]) -> Any:
    """``INSERT … ON CONFLICT (primary key) DO UPDATE`` the columns ``keys`` give (built once
    per table and columns: its ``excluded`` alias costs ~1 ms to make)."""
    from sqlalchemy.dialects import postgresql, sqlite

    pk = [c.name for c in table.primary_key.columns]
    stmt: Any = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table)
    update = {k: stmt.excluded[k] for k in keys if k not in pk}
    if update:
        return stmt.on_conflict_do_update(index_elements=pk, set_=update)
    return stmt.on_conflict_do_nothing(index_elements=pk)


def _insert(session: Session, table: Any, keys: tuple[str, ...], columns: list[list[Any]]) -> None:
    """Insert rows given as cleaned columns (one ``executemany``).

    On SQLite the statement goes to the driver with the columns' own bind processors applied
    (JSON, dates: the values SQLAlchemy would send), without SQLAlchemy's per-row parameter
    handling (~3 µs a row, 0.5 s of the 152,000 measurements); other databases get a Core
    insert."""
    if not columns or not columns[0]:
        return
    conn = session.connection()
    dialect = conn.dialect
    if dialect.name != "sqlite":
        from sqlalchemy import insert

        conn.execute(
            insert(table), [dict(zip(keys, r, strict=True)) for r in zip(*columns, strict=True)]
        )
        return
    sent = []
    for k, values in zip(keys, columns, strict=True):
        proc = table.c[k].type.dialect_impl(dialect).bind_processor(dialect)
        sent.append(values if proc is None else [proc(v) for v in values])
    names = ", ".join(dialect.identifier_preparer.quote(k) for k in keys)
    marks = ", ".join("?" * len(keys))
    sql = (
        f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({names}) VALUES ({marks})"
    )
    conn.exec_driver_sql(sql, list(zip(*sent, strict=True)))


class Store:
    """The study database.

    Parameters
    ----------
    url : str
        SQLAlchemy URL: ``sqlite:///path/tumorscope.sqlite`` or ``postgresql://user@host/db``.
    migrate : bool, keyword-only, default True
        Apply the shipped migrations on open (creates the schema in an empty database).

    Raises
    ------
    ExportError
        If the URL is unusable or the database cannot be reached (the message names the URL
        without its password).

    Examples
    --------
    >>> store = open_store("sqlite:///:memory:")
    >>> with store.transaction() as s:
    ...     store.upsert(s, "subjects", [{"subject": "001", "n_visits": 2}])
    >>> len(store.read_table("subjects"))
    1
    """

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        self.url = check_url(str(url))
        self.engine = _engine(self.url)
        if migrate:
            try:
                _migrate(self.engine)
            except SQLAlchemyError as exc:
                raise _db_error("cannot open or migrate the database", exc, self.url) from exc

    def __repr__(self) -> str:
        return f"Store({_redact(self.url)!r})"

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return str(self.engine.dialect.name)

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    # ------------------------------------------------------------------ writing
    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on any exception.

        Database errors are raised as :class:`~tumorscope.errors.ExportError`.
        """
        from sqlalchemy.exc import SQLAlchemyError
        from sqlalchemy.orm import Session

        session = Session(self.engine)
        try:
            with session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise _db_error("database write failed and was rolled back", exc, self.url) from exc
        finally:
            session.close()

    def replace(
        self,
        session: Session,
        table: str,
        where: Mapping[str, Any],
        rows: Sequence[Mapping[str, Any]],
    ) -> int:
        """Delete the rows matching ``where`` and insert ``rows`` (within ``session``).

        Parameters
        ----------
        session : Session
            From :meth:`transaction`.
        table : str
            A table name of :data:`tumorscope.study.schema.TABLES`.
        where : mapping
            Column equalities selecting the rows this unit of work owns. Every row must
            match it (checked), so a unit cannot write rows it would not replace next time.
        rows : sequence of mapping

        Returns
        -------
        int
            Number of rows inserted.
        """
        from sqlalchemy import delete

        model = _model(table)
        groups = _columns(model, rows)  # checked and cleaned, column by column
        for keys, index, columns in groups:
            _check_owned(table, where, keys, index, columns)
        cols = model.__table__.c
        session.execute(
            delete(model).where(
                *[
                    cols[k].not_in(v.values) if isinstance(v, NotIn) else cols[k] == v
                    for k, v in where.items()
                ]
            )
        )
        for keys, _, columns in groups:
            _insert(session, model.__table__, keys, [_clean_column(c) for c in columns])
        return len(rows)

    def upsert(self, session: Session, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert rows, or update the existing rows with the same primary key (the columns
        a row gives; the others keep their values).

        ``INSERT … ON CONFLICT DO UPDATE`` (one statement per write) for rows that give every
        column an insert needs, else the ORM's merge (a select, then an update or insert)."""
        model = _model(table)
        t = model.__table__
        dialect = session.get_bind().dialect.name
        for keys, _, columns in _columns(model, rows):
            values = [_clean_column(c) for c in columns]
            if dialect not in ("sqlite", "postgresql") or not _required(t) <= set(keys):
                # (a row that leaves out a NOT NULL column updates an existing row: SQLite
                # checks the insert's NOT NULL before the conflict, tested; the end of a run
                # in ``runs``)
                for row in zip(*values, strict=True):
                    session.merge(model(**dict(zip(keys, row, strict=True))))
                continue
            stmt = _upsert_statement(dialect, t, keys)
            session.execute(
                stmt, [dict(zip(keys, r, strict=True)) for r in zip(*values, strict=True)]
            )

    # ------------------------------------------------------------------ reading
    def get(self, table: str, **key: Any) -> dict[str, Any] | None:
        """The row with this primary key as a dict, or None."""
        from sqlalchemy.orm import Session

        model = _model(table)
        with Session(self.engine) as s:
            obj = s.get(model, key)
            if obj is None:
                return None
            return {c: getattr(obj, c) for c in model.__table__.c.keys()}

    def read_table(self, table: str, **where: Any) -> pd.DataFrame:
        """A table (optionally filtered by column equalities) as a DataFrame, sorted by key.

        Columns are in schema order; the rows are ordered by the primary key, so the same
        content gives the same frame on SQLite and PostgreSQL.
        """
        import pandas as pd
        from sqlalchemy import select

        model = _model(table)
        t = model.__table__
        stmt = select(t).where(*[t.c[k] == v for k, v in where.items()])
        stmt = stmt.order_by(*t.primary_key.columns)
        with self.engine.connect() as conn:
            result = conn.execute(stmt)
            columns = list(result.keys())
            # plain tuples: given SQLAlchemy's Row objects, pandas probes every row for
            # attributes (a caught exception each: 1.1 s of the 152,000 measurements)
            rows = [tuple(r) for r in result.fetchall()]
        return pd.DataFrame(rows, columns=columns)

    def counts(self) -> dict[str, int]:
        """Number of rows per table."""
        from sqlalchemy import func, select

        from .schema import TABLES

        out = {}
        with self.engine.connect() as conn:
            for name, model in TABLES.items():
                out[name] = int(conn.execute(select(func.count()).select_from(model)).scalar_one())
        return out

    # ------------------------------------------------------------------ export
    def export(
        self, out_dir: str | Path, *, formats: Sequence[str] = ("parquet", "csv")
    ) -> dict[str, list[Path]]:
        """Write the analysis tables as tidy Parquet and/or CSV files (atomically).

        One file per table (``subjects``, ``visits``, ``series``, ``lesions``, ``maps``,
        ``measurements``, ``assessments``, ``patterns``) named ``<table>.parquet`` / ``<table>.csv``. JSON
        columns are written as JSON text, dates as ISO strings in CSV and as dates in Parquet.

        Returns
        -------
        dict of str to list of Path
            The files written per table.
        """
        import json

        from ..files import write_csv
        from ..volume import atomic_write

        bad = sorted(set(formats) - {"parquet", "csv"})
        if bad:
            raise ExportError(f"unknown export format(s) {bad}; expected parquet or csv")
        out = Path(out_dir)
        written: dict[str, list[Path]] = {}
        for name in EXPORT_TABLES:
            frame = self.read_table(name)
            for col in ("provenance", "details"):
                if col in frame:
                    frame[col] = [json.dumps(v, sort_keys=True, default=str) for v in frame[col]]
            paths = []
            for fmt in formats:
                path = out / f"{name}.{fmt}"
                if fmt == "parquet":
                    atomic_write(path, lambda tmp, f=frame: f.to_parquet(tmp, index=False))
                else:
                    write_csv(frame, path)
                paths.append(path)
            written[name] = paths
        return written


def _model(table: str) -> Any:
    from .schema import TABLES

    try:
        return TABLES[table]
    except KeyError:
        raise ExportError(
            f"unknown table {table!r}; expected one of {', '.join(TABLES)}", field="table"
        ) from None


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open (and create or upgrade) the study database at ``url``.

    Parameters
    ----------
    url : str
        ``sqlite:///path`` or ``postgresql://user[:password]@host[:port]/dbname``.
    migrate : bool, keyword-only, default True

    Returns
    -------
    Store
    """
    return Store(url, migrate=migrate)


def utcnow() -> dt.datetime:
    """The current UTC time without tzinfo (what the ``DateTime`` columns store)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
