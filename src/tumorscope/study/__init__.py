"""The study database: subjects, visits, series, maps, lesions, measurements, assessments.

- :func:`open_store` / :class:`Store`: SQLite by default, PostgreSQL by URL; one transaction
  per unit of work; re-running a step replaces its rows.
- :mod:`tumorscope.study.schema`: the tables; migrations (Alembic) ship in
  ``tumorscope/study/migrations`` and are applied on open.
- :meth:`Store.export`: tidy Parquet/CSV tables for pandas or R.

SQLAlchemy and Alembic are in the ``db`` extra; they are imported when a store is opened.
"""

from __future__ import annotations

from .store import NotIn, Store, check_url, default_url, migrate, open_store

__all__ = ["NotIn", "Store", "check_url", "default_url", "migrate", "open_store"]
