"""`capacity-bot demo`: the real command, driven through stdin as a person would type."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from emulator.client import Button, ChatMessage
from offline.demo import BOLD, NORMAL, button_lines, map_link, styled_text

TIMEOUT_S = 60


def run_demo(tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if name != "BOT_TOKEN"}
    env.update(PYTHONIOENCODING="utf-8", NO_COLOR="1")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bot.runtime.cli",
            "demo",
            "--database",
            f"sqlite+aiosqlite:///{tmp_path}/demo.sqlite3",
        ],
        input=script,
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=tmp_path,
        env=env,
        timeout=TIMEOUT_S,
    )


def test_a_resident_registers_then_another_one_starts_in_english(tmp_path: Path) -> None:
    script = "\n".join(
        [
            "1",  # ✅ Oui, je suis d'accord
            "1",  # Français
            "1",  # 📅 Voir les ateliers
            "3",  # the first workshop (after the area and theme filters)
            "1",  # ✅ Je m'inscris
            "99",  # no such button
            ":nope",
            ":user 2 en",
            "/start",
            ":who",
            ":quit",
            "/never-sent",
        ]
    )
    result = run_demo(tmp_path, script + "\n")
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in out + result.stderr

    # /start is sent for resident 1 at once: the French welcome, consent buttons numbered.
    assert "Amina › /start" in out
    assert "Je suis le bot des ateliers numériques de Saint-Étienne." in out
    assert "[1] ✅ Oui, je suis d'accord" in out
    assert "[2] ❌ Non merci" in out
    # The language choice replaces the consent message: an edit, shown as updated.
    assert "💬 Merci !" in out
    language_choice = out.index("Dans quelle langue")
    assert "🤖 bot (updated)" in out[out.index("Amina › 1") : language_choice]
    assert "[1] Français" in out
    assert "[1] 📅 Voir les ateliers" in out
    assert "Touchez un atelier pour le voir" in out
    assert "[1] ✅ Je m'inscris" in out
    assert "(pressed “✅ Je m'inscris”)" in out
    assert "C'est noté, vous êtes inscrit(e) !" in out
    # Mistakes get a one-line hint.
    assert "no button [99] here" in out
    assert "unknown command :nope" in out
    # Resident 2 speaks English and is welcomed in English.
    assert "You are now Bernard (resident 2, en)" in out
    english = out.index("Bernard › /start")
    assert "I am the bot for the digital workshops in Saint-Étienne." in out[english:]
    assert "[1] ✅ Yes, I agree" in out[english:]
    assert "you are Bernard (resident 2, en)" in out
    # :quit ends the session: later lines are not played.
    assert "never-sent" not in out
    # Output to a pipe is plain text: no terminal codes.
    assert "\033[" not in out


def test_end_of_input_ends_the_demo_and_a_second_run_remembers_the_resident(
    tmp_path: Path,
) -> None:
    first = run_demo(tmp_path, "1\n1\n")
    assert first.returncode == 0, first.stderr
    assert "Je vous parle en français." in first.stdout

    second = run_demo(tmp_path, "")
    assert second.returncode == 0, second.stderr
    assert "Content de vous revoir" in second.stdout
    assert "Bye!" in second.stdout


def _message(text: str, entities: list[dict]) -> ChatMessage:
    raw = {"message_id": 1, "text": text, "entities": entities}
    return ChatMessage(1, text, None, [], "text", raw=raw)


def test_bold_spans_follow_utf16_offsets() -> None:
    # "🔒" is two UTF-16 code units: the bold span starts at offset 3, not 2.
    message = _message("🔒 Vos données\nsuite", [{"type": "bold", "offset": 3, "length": 11}])
    assert styled_text(message, bold=True) == f"🔒 {BOLD}Vos données{NORMAL}\nsuite"
    assert styled_text(message, bold=False) == "🔒 Vos données\nsuite"


def test_buttons_are_numbered_in_reading_order_on_their_rows() -> None:
    rows = [
        [Button("◀️ Avant", "a"), Button("Après ▶️", "b")],
        [Button("Carte", url="https://example.org")],
    ]
    assert button_lines(rows) == ["  [1] ◀️ Avant   [2] Après ▶️", "  [3] Carte ↗"]
    assert map_link(45.4221, 4.4147) == ("https://www.openstreetmap.org/?mlat=45.4221&mlon=4.4147")
