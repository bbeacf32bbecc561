"""Alembic environment of the tumorscope study database.

Used programmatically by :func:`tumorscope.study.store.open_store`: the caller passes an open
connection in ``config.attributes["connection"]``. Running ``alembic`` by hand also works with
``-x url=sqlite:///path/tumorscope.sqlite``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from tumorscope.study.schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("give the database with: alembic -x url=DATABASE_URL upgrade head")
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)
