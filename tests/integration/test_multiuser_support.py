"""The two-uid support itself: each throwaway user is a distinct uid that can run takod's code."""

from __future__ import annotations

import json

from tests.multiuser import needs_two_users

pytestmark = needs_two_users


def test_two_users_are_distinct_and_run_takod(two_users):
    victim, attacker = two_users
    assert victim.uid != attacker.uid and 0 not in (victim.uid, attacker.uid)
    out = victim.run(["id", "-u"], check=True).stdout.decode().strip()
    assert out == str(victim.uid)
    # The victim cannot read the attacker's home (0700), as on a real system.
    denied = victim.run(["ls", str(attacker.home)])
    assert denied.returncode != 0
    # The peer interpreter imports takod's client from the peer copy.
    paths = victim.run(victim.takod("paths", "--json"), env=victim.env(TAKOD_NO_SPAWN="1"))
    assert paths.returncode == 0, paths.stderr.decode()
    assert json.loads(paths.stdout)["socket"]
