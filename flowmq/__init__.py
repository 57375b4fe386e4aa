"""FlowMQ: one broker process for NATS, MQTT, AMQP 0-9-1 and Kafka clients."""

__version__ = "0.1.0"
