"""`capacity-bot playground`: the whole bot in a browser page, without Telegram.

The Bot API emulator, the real bot (on a fresh SQLite file with the sample catalogue, and a
clock that can travel forward) and a small web server run in one process; the page shows five
chats (two residents, a mediator, a coordinator and the facilitators' channel) and talks only
to that web server, which relays to the emulator's side API.
"""
