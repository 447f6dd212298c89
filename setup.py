from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

extras = {
    "sqs": ["boto3>=1.35"],
    "kombu": ["kombu>=5.3", "redis>=4.5"],
    "redis": ["redis>=4.5"],
    "fast": ["orjson>=3.9"],
    # `make bench`: the peers measured against balog, and a sampling profiler for the docs.
    "bench": [
        "dramatiq[rabbitmq,redis]>=1.15",
        "celery>=5.3",
        "faststream[rabbit,redis]>=0.5",
        "py-spy>=0.3",
    ],
    "test": [
        "pytest>=7.4",
        "pytest-xdist>=3.5",
        "hypothesis>=6.80",
        "moto[server]>=5.0",
        "ruff>=0.5",
        "mypy>=1.8",
        "boto3-stubs[sqs]>=1.28",
        "types-jsonschema",
        "types-regex",
        # examples/asyncio_app: a FastAPI app serving balog's consumers on its own loop, and the
        # client Starlette's TestClient uses.
        "fastapi>=0.110",
        "uvicorn>=0.29",
        "httpx2>=2.0",
        # The decoder's fuzz target; wheels exist for Linux up to CPython 3.11 (the fuzz test
        # falls back to hypothesis elsewhere).
        'atheris>=2.3; platform_system == "Linux" and python_version < "3.12"',
    ],
}
extras["all"] = sorted({req for name in ("sqs", "kombu", "redis", "fast") for req in extras[name]})

setup(
    name="balog",
    version="0.1.0.dev0",
    description="Structured event logging and event consumption over pluggable transports",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["balog", "balog.*"]),
    package_data={"balog": ["py.typed", "schemas/*.json"]},
    python_requires=">=3.10",
    install_requires=[
        "jsonschema>=4.17",
        "fastjsonschema>=2.18",
        "packaging>=23.0",
        "regex>=2023.0",
        "stevedore>=5.0",
    ],
    extras_require=extras,
    entry_points={
        "console_scripts": ["balog = balog.cli:main"],
        "balog.engines": [
            "memory = balog.engines.memory:MemoryEngine",
            "sqs = balog.engines.sqs:SQSEngine",
            "kombu = balog.engines.kombu:KombuEngine",
            "sqlite = balog.engines.sqlite:SQLiteEngine",
            "redis = balog.engines.redis:RedisEngine",
        ],
        "balog.transports": [
            "memory = balog.transports.memory:MemoryTransport",
            "sqs = balog.transports.sqs:SQSTransport",
            "kombu = balog.transports.kombu:KombuTransport",
            "sqlite = balog.transports.sqlite:SQLiteTransport",
            "redis = balog.transports.redis:RedisTransport",
        ],
        "pytest11": ["balog = balog.testing.plugin"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: System :: Logging",
        "Typing :: Typed",
    ],
)
