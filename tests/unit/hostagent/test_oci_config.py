"""The OCI runtime config the agent writes for runsc, compared whole with a checked-in golden
file (golden/oci_config.json), so any change to what a capsule runs with shows in review.

After an intended change, regenerate it and review the diff:

    WRENN_UPDATE_GOLDEN=1 uv run pytest tests/unit/hostagent/test_oci_config.py

Paths under the test's data dir and the agent's run dir are written as <data> and <run>.
The properties the isolation relies on are also checked one by one below, so regenerating the
golden file cannot silently drop them."""

from __future__ import annotations

import json
import os
import stat
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from wrenn_server.hostagent.capsule import Capsule, capsule_dir
from wrenn_server.hostagent.config import AgentSettings
from wrenn_server.hostagent.gvisor import GVisorRuntime
from wrenn_server.hostagent.network import CapsuleNet, names_for
from wrenn_server.hostagent.templates import TemplateStore

GOLDEN = Path(__file__).parent / "golden" / "oci_config.json"
SANDBOX_ID = "sb-0123abcd-4567-4def-8901-23456789abcd"
TOKEN = "envd-token-that-must-not-be-in-the-config"


def _written_config(tmp_path: Path) -> tuple[dict[str, Any], str, int]:
    """The config the agent writes for a fixed capsule: as JSON, as normalized text, and the
    file's mode."""
    settings = AgentSettings(data_dir=tmp_path, envd_port=49983, pids_limit=4096)
    runtime = GVisorRuntime(settings, TemplateStore(settings.templates_dir))
    netns, veth = names_for("0123abcd4567")
    capsule = Capsule(
        sandbox_id=SANDBOX_ID,
        template="minimal",
        base_image="minimal",
        vcpus=2,
        memory_mb=1024,
        disk_size_mb=4096,
        timeout_sec=300,
        token=TOKEN,
        dir=capsule_dir(settings.capsules_dir, SANDBOX_ID),
        net=CapsuleNet(netns, veth, IPv4Address("10.11.0.1"), IPv4Address("10.11.0.2")),
    )
    capsule.dir.mkdir(parents=True)
    runtime.write_bundle(capsule)
    path = capsule.dir / "config.json"
    raw = path.read_text()
    text = raw.replace(str(settings.run_dir), "<run>").replace(str(tmp_path), "<data>")
    normalized = json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    return json.loads(raw), normalized, stat.S_IMODE(os.stat(path).st_mode)


def test_config_matches_the_golden_file(tmp_path: Path) -> None:
    _, text, _ = _written_config(tmp_path)
    if os.environ.get("WRENN_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
        pytest.skip(f"rewrote {GOLDEN.name}: review its diff")
    assert text == GOLDEN.read_text(), (
        "the OCI config changed; if intended, regenerate with WRENN_UPDATE_GOLDEN=1"
    )


def test_config_keeps_the_isolation_properties(tmp_path: Path) -> None:
    config, text, mode = _written_config(tmp_path)
    # The envd token reaches envd on a pipe: pid 1's environment is readable by capsule users.
    assert TOKEN not in text
    assert mode == 0o600
    process = config["process"]
    assert process["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    assert "WRENN_ENVD_PORT=49983" in process["env"]
    assert not any(e.startswith("WRENN_ENVD_TOKEN") for e in process["env"])
    assert "CAP_SYS_ADMIN" not in process["capabilities"]["bounding"]
    assert "CAP_NET_ADMIN" not in process["capabilities"]["bounding"]
    # envd's code is mounted read-only: capsule root cannot change the agent it talks through.
    envd = next(m for m in config["mounts"] if m["destination"] == "/opt/wrenn/envd")
    assert envd["options"] == ["rbind", "ro"]
    assert envd["source"] == str(AgentSettings(data_dir=tmp_path).run_dir / "envd" / "envd")
    sysfs = next(m for m in config["mounts"] if m["destination"] == "/sys")
    assert "ro" in sysfs["options"]
    linux = config["linux"]
    assert {"type": "network", "path": "/run/netns/wrn-0123abcd4567"} in linux["namespaces"]
    assert {"pid", "ipc", "uts", "mount"} <= {n["type"] for n in linux["namespaces"]}
    assert linux["resources"] == {
        "memory": {"limit": 1024 * 1024 * 1024},
        "cpu": {"quota": 200_000, "period": 100_000},
        "pids": {"limit": 4096},
    }
    assert linux["cgroupsPath"] == f"/wrenn/{SANDBOX_ID}"
    assert config["root"] == {
        "path": str(tmp_path / "capsules" / SANDBOX_ID / "rootfs"),
        "readonly": False,
    }
    assert config["hostname"] == "0123abcd4567"
