"""An application package shaped like the seed README's: consumers found by ConsumerHub.scan."""

RECEIVED: list[tuple[str, dict]] = []
