"""A loopback stand-in for the token endpoints of pi's login flows (authorization
code exchange for OpenAI and Anthropic). It answers a code it issued with tokens
and records every request, so a test can assert the exact PKCE verifier and code.
It imports nothing from takod: it is the oracle, not a copy."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.http_base import FakeHandler, LoopbackServer

OPENAI_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
ANTHROPIC_CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _atob_safe(data: bytes) -> str:
    """base64url that is also plain base64 without padding, so pi's ``atob`` reads it too."""
    while True:
        text = _b64(data)
        if "-" not in text and "_" not in text and len(text) % 4 != 1:
            return text
        data += b" "


def jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT carrying ``claims``."""
    return f"{_atob_safe(b'{}')}.{_atob_safe(json.dumps(claims).encode())}.sig"


class FakeLoginServer(LoopbackServer):
    """Serves ``/openai/oauth/token`` (form), ``/anthropic/v1/oauth/token`` (JSON), GitHub's
    device flow under ``/github/`` (one ``slow_down``, then pending until :attr:`approved`)
    and the Copilot token at ``/copilot/token``; any other answer with
    :meth:`~tests.fakes.http_base.LoopbackServer.answer_with`."""

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.requests: list[dict[str, Any]] = []
        self.codes: dict[str, str] = {}  # code -> the S256 challenge it was issued for
        self.issued: dict[str, str] = {}  # endpoint -> the last access token
        self.account = "acct-" + secrets.token_hex(4)
        self.device_code = "dc_" + secrets.token_hex(8)
        self.user_code = "ABCD-1234"
        self.approved = threading.Event()  # the user entered the code
        self.slow_downs = 1  # answers slow_down this often before anything else
        self.github_token = "gho_" + secrets.token_hex(10)

    def issue_code(self, challenge: str) -> str:
        """A code the (test-as-)browser got for ``challenge`` after signing in."""
        code = "ac_" + secrets.token_hex(8)
        self.codes[code] = challenge
        return code

    def env(self) -> dict[str, str]:
        base = self.origin
        return {
            "TAKOD_OPENAI_TOKEN_URL": f"{base}/openai/oauth/token",
            "TAKOD_ANTHROPIC_TOKEN_URL": f"{base}/anthropic/v1/oauth/token",
            "TAKOD_OPENAI_AUTH_URL": f"{base}/openai/oauth/authorize",
            "TAKOD_ANTHROPIC_AUTH_URL": f"{base}/anthropic/oauth/authorize",
            "TAKOD_COPILOT_DEVICE_URL": f"{base}/github/login/device/code",
            "TAKOD_COPILOT_AUTH_URL": f"{base}/github/login/oauth/access_token",
            "TAKOD_COPILOT_TOKEN_URL": f"{base}/copilot/token",
        }


class _Handler(FakeHandler[FakeLoginServer]):
    server_version = "fake-login"

    def do_GET(self) -> None:
        server = self.fake
        server.requests.append({"endpoint": "copilot", "auth": self.headers.get("Authorization"),
                                "editor": self.headers.get("Editor-Version")})
        if self.send_canned():
            return
        if self.path != "/copilot/token" or self.headers.get("Authorization") != f"Bearer {server.github_token}":
            return self.send_json(401, {"message": "Bad credentials"})
        token = f"tid={secrets.token_hex(8)};exp=2000000000;proxy-ep=proxy.individual.githubcopilot.com"
        server.issued["copilot"] = token
        self.send_json(200, {"token": token, "expires_at": 2_000_000_000})

    def do_POST(self) -> None:
        server = self.fake
        raw = self.read_body().decode()
        if self.send_canned():
            server.requests.append({"endpoint": self.path, "canned": True})
            return
        ctype = self.headers.get("Content-Type", "")
        if self.path.startswith("/github/"):
            fields = {k: v[0] for k, v in parse_qs(raw).items()}
            server.requests.append({"endpoint": self.path, "fields": fields})
            if fields.get("client_id") != "Iv1.b507a08c87ecfe98":
                return self.send_json(400, {"error": "incorrect_client_credentials"})
            if self.path == "/github/login/device/code" and fields.get("scope") == "read:user":
                return self.send_json(200, {"device_code": server.device_code, "user_code": server.user_code,
                                            "verification_uri": "https://github.com/login/device",
                                            "expires_in": 900, "interval": 1})
            if fields.get("device_code") != server.device_code:
                return self.send_json(200, {"error": "incorrect_device_code"})
            if server.slow_downs > 0:
                server.slow_downs -= 1
                return self.send_json(200, {"error": "slow_down", "interval": 1})
            if not server.approved.is_set():
                return self.send_json(200, {"error": "authorization_pending"})
            return self.send_json(200, {"access_token": server.github_token, "token_type": "bearer"})
        if self.path == "/openai/oauth/token" and ctype.startswith("application/x-www-form-urlencoded"):
            fields = {k: v[0] for k, v in parse_qs(raw).items()}
            endpoint = "openai"
        elif self.path == "/anthropic/v1/oauth/token" and ctype.startswith("application/json"):
            fields = json.loads(raw)
            endpoint = "anthropic"
        else:
            return self.send_json(400, {"error": "invalid_request"})
        server.requests.append({"endpoint": endpoint, "fields": fields, "order": list(fields)})
        challenge = server.codes.pop(fields.get("code", ""), None)
        verifier = fields.get("code_verifier", "")
        client = OPENAI_CLIENT_ID if endpoint == "openai" else ANTHROPIC_CLIENT_ID
        if (fields.get("grant_type") != "authorization_code" or fields.get("client_id") != client
                or challenge is None or _b64(hashlib.sha256(verifier.encode()).digest()) != challenge):
            return self.send_json(400, {"error": "invalid_grant"})
        if endpoint == "openai":
            access = jwt({"exp": 2_000_000_000, "https://api.openai.com/auth": {"chatgpt_account_id": server.account}})
            body = {"access_token": access, "refresh_token": "rt_" + secrets.token_hex(8), "expires_in": 864000,
                    "id_token": access}
        else:
            access = "sk-ant-oat01-" + secrets.token_hex(8)
            body = {"access_token": access, "refresh_token": "sk-ant-ort01-" + secrets.token_hex(8),
                    "expires_in": 28800}
        server.issued[endpoint] = access
        self.send_json(200, body)
