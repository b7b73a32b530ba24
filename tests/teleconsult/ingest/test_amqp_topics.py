"""rabbitmq_mqtt swaps ``/`` and ``.`` between MQTT topics and AMQP routing keys: the AMQP ingest maps both ways."""

from __future__ import annotations

import pytest

from teleconsult.ingest.brokers.amqp import AmqpIngest, AmqpIngestConfig, mqtt_topic, routing_key


@pytest.mark.parametrize(
    ("topic", "key"),
    [
        ("tbib/v1/gw/gw-0001/readings", "tbib.v1.gw.gw-0001.readings"),
        ("tbib/v1/gw/site.a/receipts", "tbib.v1.gw.site/a.receipts"),  # a dot in a gateway id stays one word
    ],
)
def test_topic_and_routing_key_round_trip(topic: str, key: str) -> None:
    assert routing_key(topic) == key
    assert mqtt_topic(key) == topic


def test_no_broker_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="amqp_urls is empty"):
        AmqpIngest(AmqpIngestConfig(dsn="postgresql://x", amqp_urls=()))
