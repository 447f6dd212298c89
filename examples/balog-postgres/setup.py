from setuptools import setup

setup(
    name="balog-postgres",
    version="0.1.0",
    description="A PostgreSQL transport for balog (SELECT ... FOR UPDATE SKIP LOCKED)",
    license="MIT",
    packages=["balog_postgres"],
    package_data={"balog_postgres": ["py.typed"]},
    python_requires=">=3.10",
    install_requires=["balog", "psycopg[binary]>=3.1"],
    extras_require={"test": ["pytest>=7.4"]},
    entry_points={
        # The only link to balog: its transport entry point group. create_transport("postgres")
        # and create_engine("postgres", ...) find it by this name once the package is installed.
        "balog.transports": ["postgres = balog_postgres:PostgresTransport"],
    },
)
