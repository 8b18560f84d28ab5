"""What a create request turns into (capsule_spec.new_capsule): sizes from a snapshot template,
the caller or the agent's defaults, each bounded; the capsule's own envd token."""

from __future__ import annotations

from pathlib import Path

import pytest

from wrenn_server.hostagent import errors
from wrenn_server.hostagent.capsule import STARTING
from wrenn_server.hostagent.capsule_spec import CreateSpec, new_capsule
from wrenn_server.hostagent.config import AgentSettings
from wrenn_server.hostagent.envd_keys import EnvdKeys
from wrenn_server.hostagent.templates import IMAGE, SNAPSHOT, Template

ID = "sb-00000000-0000-4000-8000-0000000000aa"
IMAGE_T = Template(name="minimal", type=IMAGE, created_at=0)
SNAP_T = Template(
    name="snap",
    type=SNAPSHOT,
    created_at=0,
    base="minimal",
    source_capsule="sb-00000000-0000-4000-8000-0000000000bb",
    vcpus=2,
    memory_mb=2048,
    disk_size_mb=8192,
)


@pytest.fixture
def settings(tmp_path: Path) -> AgentSettings:
    return AgentSettings(
        data_dir=tmp_path, default_vcpus=1, default_memory_mb=512, default_disk_size_mb=5120
    )


@pytest.fixture
def keys(tmp_path: Path) -> EnvdKeys:
    return EnvdKeys(tmp_path / "envd.key")


def test_defaults_fill_what_the_caller_leaves_out(settings: AgentSettings, keys: EnvdKeys) -> None:
    c = new_capsule(settings, ID, IMAGE_T, CreateSpec(memory_mb=1024, default_user="u"), keys)
    assert (c.vcpus, c.memory_mb, c.disk_size_mb) == (1, 1024, 5120)
    assert (c.template, c.base_image, c.status, c.handle) == ("minimal", "minimal", STARTING, ID)
    assert c.dir == settings.capsules_dir / ID
    assert c.default_user == "u" and c.default_env == {}
    # Its own token, derived from its handle: no other capsule's envd answers to it.
    assert c.token == keys.token_for(ID) != keys.token_for(SNAP_T.source_capsule or "")


def test_a_snapshot_keeps_the_size_it_was_taken_at(settings: AgentSettings, keys: EnvdKeys) -> None:
    """Its memory image was made for that size: the caller's sizes do not apply."""
    spec = CreateSpec(vcpus=4, memory_mb=256, disk_size_mb=1024, default_env={"A": "1"})
    c = new_capsule(settings, ID, SNAP_T, spec, keys)
    assert (c.vcpus, c.memory_mb, c.disk_size_mb) == (2, 2048, 8192)
    assert (c.template, c.base_image) == ("snap", "minimal")
    assert c.default_env == {"A": "1"}
    assert spec.default_env is not c.default_env  # a copy: the caller's dict is not kept


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (CreateSpec(vcpus=65), "vcpus must be between 1 and 64"),
        (CreateSpec(vcpus=-1), "vcpus must be between 1 and 64"),
        (CreateSpec(memory_mb=63), "memory_mb must be between 64 and 262144"),
        (CreateSpec(memory_mb=262145), "memory_mb must be between 64 and 262144"),
        (CreateSpec(disk_size_mb=32), "disk_size_mb must be between 64 and 1048576"),
        (CreateSpec(disk_size_mb=1048577), "disk_size_mb must be between 64 and 1048576"),
        (CreateSpec(timeout_sec=-1), "timeout_sec must not be negative"),
    ],
)
def test_out_of_bounds(
    settings: AgentSettings, keys: EnvdKeys, spec: CreateSpec, message: str
) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        new_capsule(settings, ID, IMAGE_T, spec, keys)


def test_the_bounds_themselves_are_fine(settings: AgentSettings, keys: EnvdKeys) -> None:
    spec = CreateSpec(vcpus=64, memory_mb=64, disk_size_mb=1048576, timeout_sec=0)
    c = new_capsule(settings, ID, IMAGE_T, spec, keys)
    assert (c.vcpus, c.memory_mb, c.disk_size_mb, c.timeout_sec) == (64, 64, 1048576, 0)


def test_the_default_user_is_the_callers_else_an_image_templates(
    settings: AgentSettings, keys: EnvdKeys
) -> None:
    """The base template's capsules run as its user (wrenn-user) unless the create names one;
    a snapshot's envd already holds the user it was taken with, so none is sent for it."""
    image = Template(name="minimal", type=IMAGE, created_at=0, default_user="wrenn-user")
    assert new_capsule(settings, ID, image, CreateSpec(), keys).default_user == "wrenn-user"
    named = CreateSpec(default_user="root")
    assert new_capsule(settings, ID, image, named, keys).default_user == "root"
    assert new_capsule(settings, ID, IMAGE_T, CreateSpec(), keys).default_user == ""
    assert new_capsule(settings, ID, SNAP_T, CreateSpec(), keys).default_user == ""
