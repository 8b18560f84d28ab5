"""Which token a capsule's envd answers to. Tokens are derived from the capsule's handle
(envd_keys.py); capsules started before that, and snapshot templates taken from them, hold older
ones, which these move to the derived token."""

from __future__ import annotations

from . import errors
from .capsule import Capsule
from .envd_client import EnvdClient
from .envd_keys import EnvdKeys
from .templates import Template, TemplateStore


def snapshot_token(keys: EnvdKeys, templates: TemplateStore, template: Template) -> str:
    """The token the checkpointed envd of a snapshot template answers to."""
    if template.source_capsule:
        return keys.token_for(template.source_capsule)
    legacy = templates.legacy_envd_token(template.name)
    if legacy is None:
        raise errors.InvalidState(f"snapshot template {template.name!r} cannot be started")
    return legacy


async def rekey(keys: EnvdKeys, capsule: Capsule, client: EnvdClient) -> None:
    """Move a capsule started before envd tokens were derived to its derived token. The
    old token was in its envd's environment (readable by every capsule user under gVisor)
    and, once replaced, opens nothing."""
    token = keys.token_for(capsule.handle)
    if capsule.token == token:
        return
    await client.init(token=token)
    client.set_token(token)
    capsule.token = token
    capsule.save()


async def adopt_token(keys: EnvdKeys, capsule: Capsule, client: EnvdClient) -> None:
    """`rekey` for a capsule found running at start, which an earlier re-key may have
    reached without its record being saved (the agent stopped in between)."""
    try:
        await rekey(keys, capsule, client)
    except errors.AgentError:
        token = keys.token_for(capsule.handle)
        client.set_token(token)
        try:
            await client.health()
        except errors.AgentError:
            client.set_token(capsule.token)
            raise
        capsule.token = token
        capsule.save()
