"""MQTT 3.1, 3.1.1 and 5.0 for FlowMQ: the packet codec (``codec/``) first;
the protocol, sessions and retained messages come with it on the same core."""
