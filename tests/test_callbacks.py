"""Callback data: short, versioned, validated, bound to the person it was made for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.plumbing.callbacks import ACTIONS, MAX_BYTES, CallbackCodec

codec = CallbackCodec(b"secret-of-this-bot")
_SAMPLE_ARGS = {"id": 2**31 - 1, "flag": 1, "lang": "ar"}


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_every_action_round_trips_within_64_bytes_at_its_largest(action: str) -> None:
    _, kinds = ACTIONS[action]
    args = tuple(_SAMPLE_ARGS[k] for k in kinds)
    data = codec.encode(9_999_999_999, action, *args)
    assert len(data.encode()) <= MAX_BYTES
    decoded = codec.decode(9_999_999_999, data)
    assert decoded is not None and (decoded.action, decoded.args) == (action, args)


def test_data_made_for_one_person_is_refused_for_another() -> None:
    data = codec.encode(1, "register", 5, 0, 0, 0)
    assert codec.decode(1, data) is not None
    assert codec.decode(2, data) is None


def test_data_signed_with_another_secret_is_refused() -> None:
    data = CallbackCodec(b"another bot").encode(1, "register", 5, 0, 0, 0)
    assert codec.decode(1, data) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d.replace("|5|", "|6|"),  # another workshop
        lambda d: "2" + d[1:],  # another version
        lambda d: d.replace("|r|", "|x|"),  # another action with the same tag
        lambda d: d.rsplit("|", 1)[0],  # no tag
        lambda d: d + "|0",  # an extra argument
    ],
)
def test_tampered_data_is_refused(tamper) -> None:
    data = codec.encode(1, "register", 5, 0, 0, 0)
    assert codec.decode(1, tamper(data)) is None


def test_wrong_number_of_arguments_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        codec.encode(1, "register", 5)


@given(st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.decode("latin-1")))
def test_arbitrary_data_never_raises_and_is_refused(data: str) -> None:
    assert codec.decode(1, data) is None


# A lone surrogate is a str no client encodes, but JSON carries it ("\udcff"): a forger's.
LONE_SURROGATE = st.characters(categories=["Cs"])


@pytest.mark.parametrize(
    "data",
    [
        "1|m|\udcff",
        "\udcff",
        "1|m|" + codec.encode(1, "menu").rsplit("|", 1)[1][:-1] + "\udcff",  # in the tag
        codec.encode(1, "register", 5, 0, 0, 0).replace("|5|", "|5\ud800|"),  # in an argument
    ],
)
def test_data_with_a_lone_surrogate_is_refused(data: str) -> None:
    assert codec.decode(1, data) is None


@given(
    st.sampled_from(["", "1|", "1|m|", "1|r|5|0|0|"]),
    st.text(max_size=30),
    LONE_SURROGATE,
    st.text(max_size=30),
)
def test_a_lone_surrogate_anywhere_never_raises_and_is_refused(
    prefix: str, before: str, lone: str, after: str
) -> None:
    assert codec.decode(1, prefix + before + lone + after) is None


@given(st.integers(min_value=0, max_value=2**31 - 1), st.sampled_from(["fr", "en", "ar"]))
def test_valid_values_survive(workshop: int, language: str) -> None:
    assert codec.decode(7, codec.encode(7, "card", workshop, 1, 2, 3)).args == (workshop, 1, 2, 3)
    assert codec.decode(7, codec.encode(7, "lang", language)).args == (language,)
