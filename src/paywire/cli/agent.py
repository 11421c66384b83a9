"""``paywire agent keys``: an agent's Ed25519 signing key and the key directory its sellers fetch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

agent_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="Agent identity: RFC 9421 request-signing keys (Web Bot Auth).")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the ``paywire`` app."""
    app.add_typer(agent_app, name="agent")


@agent_app.command()
def keys(
    agent: Annotated[str, typer.Option(help="The agent's URL, where the directory is served "
                                            "(https://bot.example): it goes into every Signature-Agent header.")],
    out: Annotated[Path, typer.Option(help="Folder to write into (the site root of the agent URL).")] = Path("."),
    key_file: Annotated[Path | None, typer.Option(help="The private key (JWK) to use or create "
                                                       "(default: OUT/agent-key.json).")] = None,
) -> None:
    """Write OUT/.well-known/http-message-signatures-directory (the JWKS to serve as a static file at AGENT) and
    create the signing key OUT/agent-key.json (mode 0600) unless it exists. Load it with
    AgentKey.from_private_jwk(json.load(...)) and give it to the buyer as agent_key=."""
    from paywire.identity.agent import DIRECTORY_PATH, AgentKey, directory

    path = key_file or out / "agent-key.json"
    if path.exists():
        key = AgentKey.from_private_jwk(json.loads(path.read_text()))
        if key.agent != agent.rstrip("/"):
            raise typer.BadParameter(f"{path} belongs to agent {key.agent}, not {agent}")
    else:
        key = AgentKey.generate(agent)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(key.private_jwk(), f, indent=2)
    target = out / DIRECTORY_PATH.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(directory([key]), indent=2) + "\n")
    typer.echo(f"key {key.keyid} ({key.did})\nkey file: {path}\ndirectory: {target}\n"
               f"serve it at {key.agent}{DIRECTORY_PATH} with content-type "
               "application/http-message-signatures-directory+json")
