"""`egw token create|list|revoke`: lasting API tokens kept in `auth.token_file`.

The file (JSON) holds each token's name, sha256, scopes and namespaces, never the token
itself: `create` prints the token once. It is written whole to a temporary file (mode 0600)
then renamed over the old one, so a reader sees the old file or the new one. `egw serve`
reads it at start, in addition to `auth.tokens`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

from egw.cli import codes
from egw.cli.codes import CLIError
from egw.config import SCOPES, Config, NamespaceGrant, TokenConfig, load_config
from egw.config.namespaces import NAMESPACE
from egw.errors import ConfigError

DEFAULT_SCOPES = ["tasks:read", "tasks:write"]
#: `egw token` runs no task: exit codes as `egw serve`'s (1 could not write, 2 usage)
_FAILED, _USAGE = 1, 2
_KEYS = {"name", "sha256", "scopes", "namespaces"}


def read_token_file(path: str) -> list[TokenConfig]:
    """The entries of a token file (none if it does not exist yet); what is wrong with
    it is a `ConfigError` naming the file and the entry."""
    key = f"auth.token_file ({path})"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(key, f"cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError as exc:
        raise ConfigError(key, f"is not valid JSON: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("tokens", []), list):
        raise ConfigError(key, "must be a mapping with a list 'tokens'")
    entries: list[TokenConfig] = []
    for i, item in enumerate(data.get("tokens") or []):
        where = f"{key}: tokens[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(where, "must be a mapping of name, sha256, scopes")
        if "token" in item:
            raise ConfigError(f"{where}.token", "the file keeps sha256, never the token itself")
        unknown = sorted(set(item) - _KEYS)
        if unknown:
            raise ConfigError(
                f"{where}.{unknown[0]}", "unknown key (name, sha256, scopes, namespaces)"
            )
        name, sha, scopes = item.get("name"), item.get("sha256"), item.get("scopes")
        if not isinstance(name, str) or not isinstance(sha, str):
            raise ConfigError(where, "needs a name and a sha256")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ConfigError(f"{where}.scopes", "must be a list of scopes")
        grants = _grants(item.get("namespaces"), f"{where}.namespaces")
        entry = TokenConfig(name=name, sha256=sha, scopes=list(scopes), namespaces=grants)
        entry.validate(where)
        if any(e.name == name for e in entries):
            raise ConfigError(f"{where}.name", f"duplicate token name {name!r}")
        entries.append(entry)
    return entries


def _grants(value: Any, where: str) -> list[NamespaceGrant] | None:
    """A file entry's namespaces: absent (the ``default`` namespace only, as a config token
    without them), ``"*"``, or a list of names; in each, what the token's scopes allow."""
    if value is None:
        return None
    names = [value] if value == "*" else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(where, 'must be "*" or a non-empty list of namespace names')
    if "*" in names and len(names) > 1:
        raise ConfigError(where, "'*' already grants every namespace: list it alone")
    for j, name in enumerate(names):
        if name != "*" and not NAMESPACE.fullmatch(name):
            raise ConfigError(f"{where}[{j}]", f"{name!r} is not a namespace name (a DNS label)")
        if name in names[:j]:
            raise ConfigError(f"{where}[{j}]", f"namespace {name!r} is listed twice")
    return [NamespaceGrant(name=n) for n in names]


def _check_declared(cfg: Config, entry: TokenConfig, where: str) -> None:
    """Each namespace an entry names is declared in the config (or is ``default``)."""
    declared = {"default", "*", *cfg.namespaces}
    for j, grant in enumerate(entry.namespaces or ()):
        if grant.name not in declared:
            raise ConfigError(
                f"{where}.namespaces[{j}]",
                f"unknown namespace {grant.name!r} (declared: {sorted(declared - {'*'})})",
            )


def with_token_file(cfg: Config) -> Config:
    """``cfg`` with the token file's entries added to ``auth.tokens`` (for `egw serve`)."""
    path = cfg.auth.token_file
    if not path:
        return cfg
    from dataclasses import replace

    extra = read_token_file(path)
    names = {t.name for t in cfg.auth.tokens if t.configured}
    for i, entry in enumerate(extra):
        _check_declared(cfg, entry, f"auth.token_file ({path}): tokens[{i}]")
        if entry.name in names:
            raise ConfigError(
                f"auth.token_file ({path}): tokens[{i}].name",
                f"{entry.name!r} is also in auth.tokens: give it another name",
            )
    return replace(cfg, auth=replace(cfg.auth, tokens=[*cfg.auth.tokens, *extra]))


def _write(path: str, entries: list[TokenConfig]) -> None:
    data: dict[str, Any] = {"tokens": [_entry(e) for e in entries]}
    text = json.dumps(data, indent=2) + "\n"
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _entry(e: TokenConfig) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": e.name, "sha256": e.sha256, "scopes": e.scopes}
    if e.namespaces is not None:
        entry["namespaces"] = [g.name for g in e.namespaces]
    return entry


def _token_file(args: argparse.Namespace) -> str:
    path = args.file or load_config(args.config).auth.token_file
    if not path:
        raise CLIError(
            "no token file: set auth.token_file in the config (the shipped config.yaml "
            "uses data/tokens.json) or pass --file",
            _USAGE,
        )
    return str(path)


def token_command(args: argparse.Namespace) -> int:
    path = _token_file(args)
    entries = read_token_file(path)
    try:
        if args.action == "create":
            return _create(path, entries, args)
        if args.action == "revoke":
            kept = [e for e in entries if e.name != args.name]
            if len(kept) == len(entries):
                raise CLIError(f"no token named {args.name!r} in {path} (egw token list)", _USAGE)
            _write(path, kept)
            print(
                f"egw: revoked {args.name!r}; a running egw serve accepts it until restarted",
                file=sys.stderr,
            )
            return codes.OK
    except OSError as exc:
        raise CLIError(f"{exc.filename or path}: {exc.strerror or exc}", _FAILED) from None
    for e in entries:
        spaces = ",".join(g.name for g in e.namespaces) if e.namespaces else "default"
        print(f"{e.name}\t{','.join(e.scopes)}\t{spaces}\tsha256:{(e.sha256 or '')[:12]}")
    return codes.OK


def _create(path: str, entries: list[TokenConfig], args: argparse.Namespace) -> int:
    scopes = args.scopes or DEFAULT_SCOPES
    for s in scopes:
        if s not in SCOPES:
            raise CLIError(
                f"--scopes {s}: unknown scope (one of {', '.join(sorted(SCOPES))})", _USAGE
            )
    if any(e.name == args.name for e in entries):
        raise CLIError(f"{path} already has a token named {args.name!r} (revoke it first)", _USAGE)
    try:
        grants = _grants(args.namespaces, "--namespaces")
    except ConfigError as exc:
        raise CLIError(f"{exc.path}: {exc.problem}", _USAGE) from None
    token = secrets.token_urlsafe(32)
    entry = TokenConfig(
        name=args.name,
        sha256=hashlib.sha256(token.encode()).hexdigest(),
        scopes=list(scopes),
        namespaces=grants,
    )
    try:
        entry.validate("NAME")
    except ConfigError as exc:
        raise CLIError(f"NAME {args.name!r}: {exc.problem}", _USAGE) from None
    if not args.file:  # the config is at hand: its namespaces are known now
        try:
            _check_declared(load_config(args.config), entry, "--namespaces")
        except ConfigError as exc:
            raise CLIError(f"{exc.path}: {exc.problem}", _USAGE) from None
    _write(path, [*entries, entry])
    print(token)
    spaces = ", ".join(args.namespaces) if args.namespaces else "default"
    print(
        f"egw: token {args.name!r} ({', '.join(scopes)}; namespaces: {spaces}) saved as its "
        f"sha256 in {path}; "
        "this is the only time it is shown. egw serve accepts it from its next start.",
        file=sys.stderr,
    )
    return codes.OK


def add_token_parser(sub: Any) -> None:
    tk = sub.add_parser(
        "token",
        help="create, list or revoke lasting API tokens (auth.token_file)",
        description="create, list or revoke lasting API tokens, kept hashed in auth.token_file",
    )
    tk.add_argument("--config", help="config file naming auth.token_file")
    tk.add_argument("--file", help="the token file (overrides auth.token_file)")
    acts = tk.add_subparsers(dest="action", metavar="ACTION", required=True)
    cr = acts.add_parser("create", help="make a token; print it once")
    cr.add_argument("name", metavar="NAME")
    cr.add_argument(
        "--scopes",
        nargs="+",
        metavar="SCOPE",
        help=f"of {', '.join(sorted(SCOPES))} (default: {' '.join(DEFAULT_SCOPES)})",
    )
    cr.add_argument(
        "--namespaces",
        nargs="+",
        metavar="NAMESPACE",
        help="the namespaces it may use, with what its scopes allow in each, or '*' for all"
        " (default: the 'default' namespace only)",
    )
    acts.add_parser("list", help="names, scopes, namespaces and a prefix of each hash")
    rv = acts.add_parser("revoke", help="remove a token")
    rv.add_argument("name", metavar="NAME")
    tk.set_defaults(run=token_command)
