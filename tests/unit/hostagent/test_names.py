"""Capsule ids and template names name directories on the host: the agent accepts only their one
canonical form (the RPC edge end to end: tests/integration/test_host_safety.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from wrenn_server.hostagent import errors
from wrenn_server.hostagent.capsule import Capsule, capsule_dir, validate_sandbox_id
from wrenn_server.hostagent.rpc_guard import check_names
from wrenn_server.hostagent.templates import TemplateStore, validate_name
from wrenn_server.proto.hostagent.v1 import hostagent_pb2 as pb

GOOD_ID = f"sb-{uuid.uuid4()}"
BAD_IDS = [
    "",
    "sb-",
    "sb-/../..",
    "sb-../../templates",
    f"{GOOD_ID}\n",
    f"{GOOD_ID}/..",
    GOOD_ID.upper().replace("SB-", "sb-"),
    f"sb-{uuid.uuid4().hex}",
    f"sb-{{{uuid.uuid4()}}}",
    f"xx-{uuid.uuid4()}",
    f" {GOOD_ID}",
]
BAD_NAMES = ["", "minimal\n", "..", ".hidden", "a/b", "../x", "-x", "a b", "x" * 129, "é"]


def test_canonical_ids_pass() -> None:
    assert validate_sandbox_id(GOOD_ID) == GOOD_ID


@pytest.mark.parametrize("bad", BAD_IDS)
def test_other_ids_are_refused(bad: str, tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidArgument):
        validate_sandbox_id(bad)
    with pytest.raises(errors.InvalidArgument):
        capsule_dir(tmp_path, bad)
    with pytest.raises(errors.InvalidArgument):
        Capsule(
            sandbox_id=bad, template="minimal", base_image="minimal", vcpus=1, memory_mb=256,
            disk_size_mb=1024, timeout_sec=0, token="t", dir=tmp_path / "x",
        )  # fmt: skip
    with pytest.raises(errors.InvalidArgument):
        check_names(pb.SandboxRef(sandbox_id=bad or "sb-"))


@pytest.mark.parametrize("good", ["minimal", "a", "my-app_v1.2", "A" * 128])
def test_plain_names_pass(good: str) -> None:
    assert validate_name(good) == good


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_other_names_are_refused(bad: str, tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidArgument):
        validate_name(bad)
    store = TemplateStore(tmp_path)
    for call in (store.dir, store.get, store.exists, store.staging, store.delete):
        with pytest.raises(errors.InvalidArgument):
            call(bad)
    assert list(tmp_path.iterdir()) == []


def test_the_rpc_edge_checks_every_naming_field() -> None:
    check_names(pb.CreateSandboxRequest(sandbox_id=GOOD_ID, template="minimal"))
    check_names(pb.CreateSandboxRequest())  # empty: the agent picks them
    for request in (
        pb.CreateSandboxRequest(sandbox_id="sb-/../.."),
        pb.CreateSandboxRequest(template="minimal\n"),
        pb.CreateSnapshotRequest(sandbox_id=GOOD_ID, name="snap\n"),
        pb.FlattenRootfsRequest(sandbox_id=GOOD_ID, name="../x"),
        pb.DeleteSnapshotRequest(name="minimal\n"),
        pb.ExecRequest(sandbox_id=f"{GOOD_ID}\n", cmd="true"),
    ):
        with pytest.raises(errors.InvalidArgument):
            check_names(request)
