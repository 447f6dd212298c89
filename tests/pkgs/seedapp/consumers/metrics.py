from balog.consumers import consumer_config
from seedapp import RECEIVED


@consumer_config(
    topic="myproj-events-{env}",
    cls_type="metrics",
    version="<1.0",
)
def process_metrics(settings, event):
    RECEIVED.append(("metrics", event))
