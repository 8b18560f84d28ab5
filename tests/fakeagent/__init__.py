"""An in-process fake host agent for tests that run without root: the real gRPC servicer
interface over in-memory capsules (servicer.py), served on a loopback port (server.py)."""

from .errors import Refused
from .faults import Faults, Hold
from .processes import FakeProcess
from .sandbox import FakeSandbox, FakeTemplate
from .server import FakeAgentServer
from .servicer import BASE_TEMPLATE, FakeHostAgent

__all__ = [
    "BASE_TEMPLATE",
    "FakeAgentServer",
    "FakeHostAgent",
    "FakeProcess",
    "FakeSandbox",
    "FakeTemplate",
    "Faults",
    "Hold",
    "Refused",
]
