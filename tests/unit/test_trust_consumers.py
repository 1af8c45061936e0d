"""What the trust verdict changes in the pure rules that consume it (readiness,
doctor), and reading a Node's version from its files instead of running it."""

from __future__ import annotations

from pathlib import Path

from takod_daemon.credentials.summary import CredentialSummary
from takod_daemon.doctor import run_checks
from takod_daemon.providers.detect import BinaryInfo, in_workspace, node_version_from_files
from takod_daemon.readiness import Facts, evaluate
from takod_daemon.resolve.pi import PiCredential, PiPlan
from takod_daemon.trust import REASON, Untrusted, WorkspaceTrust
from tests.unit.test_doctor_checks import facts as doctor_facts
from tests.unit.test_doctor_checks import status as doctor_status

NOW = 1_800_000_000.0
THEIRS = WorkspaceTrust(root="/tmp/x", problem=Untrusted("/tmp/x/.tako", "is owned by eve (uid 1002)", 1002, True))


def ready_facts(untrusted: WorkspaceTrust | None) -> Facts:
    key = CredentialSummary("anthropic", source="env:ANTHROPIC_API_KEY", kind="api_key", masked="sk-...abcd")
    binaries = {n: BinaryInfo(name=n, path=f"/bin/{n}", version="1.0.0", source="path") for n in ("pi", "claude")}
    agent = Path("/tmp/x/.tako/pi/agent")
    pi_plan = PiPlan(agent, agent / "auth.json", PiCredential("anthropic", "env:ANTHROPIC_API_KEY", "env", "sk-...abcd"))
    return Facts(now=NOW, binaries=binaries, credentials={"pi": [key], "claude": [key]}, untrusted=untrusted,
                 pi_plan=pi_plan)


def test_the_same_facts_are_ready_in_ones_own_workspace() -> None:
    statuses, selected = evaluate(ready_facts(None))
    assert selected == "pi" and {s.name for s in statuses if s.ready} == {"pi", "claude"}


def test_nothing_is_ready_or_selected_in_an_untrusted_workspace_but_all_is_reported() -> None:
    statuses, selected = evaluate(ready_facts(THEIRS))
    assert selected is None
    for s in statuses:
        assert (s.ready, s.reason) == (False, REASON)
        assert s.hint == THEIRS.hint and "chown" not in (s.hint or "")
        assert s.detail["untrusted"] == "/tmp/x/.tako is owned by eve (uid 1002)"
        assert s.level in ("installed", "not-installed", "unknown")
    pi = next(s for s in statuses if s.name == "pi")
    assert pi.detail["path"] == "/bin/pi" and pi.detail["credential"]["masked"] == "sk-...abcd"  # still reported


def test_doctor_fails_trust_and_offers_no_workspace_repair_there() -> None:
    missing_runtime = dict(pi_runtime_version=None, npm_path="/usr/bin/npm", pi_package="pi@1",
                           providers=[doctor_status("pi", False, "not-installed")], selected=None)
    own = {c.id: c for c in run_checks(doctor_facts(**missing_runtime))}
    assert own["workspace-trust"].verdict == "ok" and own["pi-runtime"].fixable and own["pi-auth"].fixable
    theirs = {c.id: c for c in run_checks(doctor_facts(**missing_runtime, untrusted=THEIRS.detail,
                                                       untrusted_hint=THEIRS.hint))}
    assert theirs["workspace-trust"].verdict == "fail" and theirs["workspace-trust"].fix == THEIRS.hint
    assert not any(theirs[i].fixable for i in ("pi-runtime", "pi-auth", "provider:pi"))


def test_node_version_comes_from_its_header_or_its_directory(tmp_path: Path) -> None:
    prefix = tmp_path / "node-prefix"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "node").write_text("#!/bin/sh\nexit 99\n")
    assert node_version_from_files(prefix / "bin" / "node") is None
    (prefix / "include" / "node").mkdir(parents=True)
    (prefix / "include" / "node" / "node_version.h").write_text(
        "#define NODE_MAJOR_VERSION 22\n#define NODE_MINOR_VERSION 11\n#define NODE_PATCH_VERSION 0\n")
    assert node_version_from_files(prefix / "bin" / "node") == "22.11.0"
    nvm = tmp_path / "versions" / "node" / "v20.6.1" / "bin"
    nvm.mkdir(parents=True)
    (nvm / "node").symlink_to(prefix / "bin" / "node")  # the header of the real binary wins
    assert node_version_from_files(nvm / "node") == "22.11.0"
    (nvm.parent.parent / "v18.0.0" / "bin").mkdir(parents=True)
    (nvm.parent.parent / "v18.0.0" / "bin" / "node").write_text("")
    assert node_version_from_files(nvm.parent.parent / "v18.0.0" / "bin" / "node") == "18.0.0"


def test_in_workspace_sees_through_links(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "bin").mkdir(parents=True)
    (tmp_path / "link").symlink_to(ws)
    assert in_workspace(tmp_path / "link" / "bin" / "node", ws)
    assert in_workspace(ws / "bin" / "node", tmp_path / "link")
    assert not in_workspace(tmp_path / "wsx" / "node", ws)
    assert not in_workspace("/usr/bin/node", None)
