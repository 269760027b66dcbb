"""Log pseudonyms: keyed with the bot token, so logs cannot be brute-forced back to ids."""

from __future__ import annotations

import hashlib

from bot.logs import log_pseudonym

TOKEN = "123456:TEST-token-for-the-log-pseudonyms"


def test_log_pseudonyms_are_stable_for_one_secret_and_differ_with_another():
    one = log_pseudonym(424242, TOKEN)
    assert one == log_pseudonym(424242, TOKEN)  # stable: refusals of one person line up
    assert len(one) == 12 and int(one, 16) >= 0
    assert one != log_pseudonym(424243, TOKEN)
    assert one != log_pseudonym(424242, "654321:another-token")  # keyed
    # Not the old unkeyed digest, which anyone could recompute for every Telegram id.
    assert one != hashlib.sha256(b"424242").hexdigest()[:12]
