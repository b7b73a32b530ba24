"""Ingest from brokers other than an MQTT shared subscription (docs/scale-out.md).

- :mod:`.amqp`: RabbitMQ's quorum queue bound to the MQTT plugin's ``amq.topic`` (the clustered deployment): AMQP
  competing consumers, the same validation, enrolment, write path and commit receipts as
  :class:`teleconsult.ingest.worker.IngestWorker`, and an ack only after COMMIT.
"""
