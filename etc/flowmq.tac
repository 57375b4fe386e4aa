"""Run FlowMQ with ``twistd -ny etc/flowmq.tac``.

Settings: the embedded defaults, or the TOML file named by the environment
variable FLOWMQ_CONFIG.
"""

import os

from twisted.application import service

from flowmq import config
from flowmq.tap import build_service

application = service.Application("flowmq")
build_service(config.load(os.environ.get("FLOWMQ_CONFIG"), {})).setServiceParent(application)
