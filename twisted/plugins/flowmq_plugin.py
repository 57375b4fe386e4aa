"""Registers ``twistd flowmq`` with Twisted's plugin system."""

from twisted.application.service import ServiceMaker

flowmq = ServiceMaker("FlowMQ", "flowmq.tap", "FlowMQ multi-protocol message broker", "flowmq")
