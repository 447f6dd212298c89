"""Where balog 0.x kept its SQS engine; ``from balog.consumers.sqs import SQSEngine`` works."""

from balog.engines.sqs import SQSEngine

__all__ = ["SQSEngine"]
