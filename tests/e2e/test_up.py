"""The README's first command: `wrenn up` starts the whole platform, prints and saves working
credentials, runs side by side with another instance, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import httpx

from .conftest import Platform, control_plane_workers, running, start


def assert_root_only(data_dir: Path) -> None:
    """Nothing in the data dir is open to the host's other users (the test made the directory
    0755: `wrenn up` tightens it): the database and its WAL, logs, secrets, credentials, template
    metadata and disks, the paused capsule's memory image. Root filesystems keep their modes
    below 0700 directories."""
    seen: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(data_dir):
        dirnames[:] = [d for d in dirnames if d not in ("rootfs", "disk")]
        for name in [".", *dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            if not stat.S_ISLNK(st.st_mode):
                seen[os.path.normpath(os.path.join(dirpath, name))] = stat.S_IMODE(st.st_mode)
    assert {"wrenn.db", "agent.log", "controlplane.log", "template.json", "pages.img"} <= {
        Path(p).name for p in seen
    }, sorted(seen)
    assert {p: oct(m) for p, m in seen.items() if m & 0o077} == {}


def test_two_instances_side_by_side_then_ctrl_c(platforms: list[Platform], tmp_path: Path) -> None:
    platforms.append(start(tmp_path, "one"))
    platforms.append(start(tmp_path, "two", workers=1))  # one process is allowed too
    for p in platforms:
        creds = p.credentials()
        assert stat.S_IMODE((p.data_dir / "credentials.json").stat().st_mode) == 0o600
        printed = p.output.read_text()
        assert creds["api_key"] in printed and "WRENN_BASE_URL" in printed
        # E2B's SDK is pointed at this control plane, for its API and the in-sandbox calls.
        local = f"http://localhost:{p.port}"
        assert creds["e2b"] == {"api_url": local, "sandbox_url": local}
        assert f"E2B_SANDBOX_URL={local}" in printed and "E2B_API_KEY=" in printed
        headers = {"X-API-Key": creds["api_key"]}
        with httpx.Client(base_url=p.url, headers=headers, timeout=60, trust_env=False) as http:
            capsule = http.post("/v1/capsules", json={"memory_mb": 256})
            assert capsule.status_code == 201, capsule.text
            cid = capsule.json()["id"]
            res = http.post(f"/v1/capsules/{cid}/exec", json={"cmd": "echo hi"})
            assert res.json()["stdout"] == "hi\n"
            # The port proxy's domain as printed and saved, with the name resolved by the
            # system: the control plane answers and tunnels into the capsule (where nothing
            # listens on 8999).
            domain = f"localhost:{p.port}"
            assert (creds["proxy_domain"], creds["api_url"]) == (domain, f"http://{domain}")
            assert f"http://<port>-<capsule id>.{domain}/" in printed
            res = http.get(f"http://8999-{cid}.{domain}/")
            assert res.status_code == 502 and "port 8999" in res.json()["error"]["message"]
            # Left running on purpose: Ctrl-C must stop the platform around it.
            # The printed admin signs in; nobody else can sign up.
            login = http.post(
                "/v1/auth/login", json={"email": creds["email"], "password": creds["password"]}
            )
            assert login.status_code == 200, login.text
            me = http.get("/v1/me", headers={"Authorization": f"Bearer {login.json()['token']}"})
            assert me.json()["is_admin"] is True
            stranger = {"email": "stranger@example.com", "password": "x" * 12, "name": "S"}
            assert http.post("/v1/auth/signup", json=stranger).status_code == 403
    first = platforms[0]
    workers = control_plane_workers(first)
    assert workers  # its control plane's processes, one per core by default
    first.proc.send_signal(signal.SIGINT)
    assert first.proc.wait(60) == 0
    assert "stopped (1 capsule(s) paused)" in first.output.read_text()
    assert_root_only(first.data_dir)
    # Its processes are gone (the capsule was paused, not left running); the other instance is
    # untouched and still answers.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(first.data_dir) not in ps
    assert not any(running(pid) for pid in workers)  # their command lines do not name it
    second = platforms[1]
    assert httpx.get(f"{second.url}/health", trust_env=False).status_code == 200
    second.proc.send_signal(signal.SIGINT)
    assert second.proc.wait(60) == 0

    # Started again, the first instance keeps its credentials and its capsule, paused.
    again = start(tmp_path, "one")
    platforms.append(again)
    creds = again.credentials()
    assert creds["api_key"] == first.credentials()["api_key"]
    headers = {"X-API-Key": creds["api_key"]}
    with httpx.Client(base_url=again.url, headers=headers, timeout=60, trust_env=False) as http:
        (capsule,) = [c for c in http.get("/v1/capsules").json() if c["status"] != "stopped"]
        deadline = time.monotonic() + 30
        while http.get(f"/v1/capsules/{capsule['id']}").json()["status"] != "paused":
            assert time.monotonic() < deadline, "the reconciler did not see the pause"
            time.sleep(0.5)
        assert http.post(f"/v1/capsules/{capsule['id']}/resume").status_code == 200
        res = http.post(f"/v1/capsules/{capsule['id']}/exec", json={"cmd": "echo back"})
        assert res.json()["stdout"] == "back\n"
        assert http.delete(f"/v1/capsules/{capsule['id']}").status_code == 204
    again.proc.send_signal(signal.SIGINT)
    assert again.proc.wait(60) == 0
