from balog.consumers import consumer_config
from seedapp import RECEIVED
from seedapp.consumers.metrics import process_metrics  # noqa: F401 - re-import is not a declaration


@consumer_config(topic="myproj-events-{env}", cls_type=("log", "audit"), version=">=0.1,<1.0")
def process_logs(settings, event):
    RECEIVED.append(("logs", event))


@consumer_config(topic="other-{env}", cls_type="metrics")
@consumer_config(topic="myproj-events-{env}", cls_type="metrics", version=">=1.0")
def process_future_metrics(settings, event):
    RECEIVED.append(("future", event))
