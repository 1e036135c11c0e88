"""``--chown=user:group`` resolved against an image's ``/etc/passwd`` and ``/etc/group`` (sans-IO)."""

from __future__ import annotations

from .._errors import BuildError


def _ids(table: str) -> dict[str, int]:
    """Names to ids in a passwd or group file's text."""
    found: dict[str, int] = {}
    for line in table.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            found.setdefault(fields[0], int(fields[2]))
    return found


def resolve_owner(spec: str, passwd: str, group: str) -> tuple[int, int]:
    """``spec``'s uid and gid: names or numbers; with no group, the uid is the gid too (docker's rule)."""
    user, has_group, group_name = spec.partition(":")
    uid = _one(user, _ids(passwd), "user", spec)
    gid = _one(group_name, _ids(group), "group", spec) if has_group else uid
    return uid, gid


def _one(name: str, table: dict[str, int], what: str, spec: str) -> int:
    if name.isdigit():
        return int(name)
    if name in table:
        return table[name]
    raise BuildError(f"--chown={spec}: no {what} {name!r} in the image's /etc/{'passwd' if what == 'user' else what}")
