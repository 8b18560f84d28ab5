"""E2B's in-sandbox protocol ("envd": the Connect services `process.Process` and
`filesystem.Filesystem`, HTTP `/files`, `/health`, `/envs`) served for a capsule on the control
plane and translated to the host agent's RPCs, so the capsule's own agent stays as it is. The
HTTP edge (api/e2b_envd.py) routes a request here once it names a capsule; `Envd` is the capsule
as the request's credentials reach it."""
