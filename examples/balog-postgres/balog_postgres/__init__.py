"""A PostgreSQL transport for balog, built only on balog's public API.

Install it and balog finds it by name::

    from balog.transports import create_transport
    from balog.engines import create_engine

    transport = create_transport("postgres", dsn="postgresql://app@db/app")
    engine = create_engine("postgres", hub=hub, dsn="postgresql://app@db/app")
"""

from balog_postgres.transport import PostgresTransport

__all__ = ["PostgresTransport"]
