"""``fast_flag_ops`` gives what ``Flag``'s own ``&`` and ``|`` give: the same objects."""

from __future__ import annotations

import enum

from hypothesis import given
from hypothesis import strategies as st

from txgraph.model.node import OpenFlag
from txgraph.model.perm_bits import Perm, Role

_CLASSES: list[type[enum.IntFlag]] = [Perm, Role, OpenFlag]


def _values(cls: type[enum.IntFlag]) -> st.SearchStrategy[int]:
    everything = 0
    for member in cls:
        everything |= int(member)
    # the declared bits, and bits beyond them (IntFlag keeps those: boundary KEEP)
    return st.integers(0, everything) | st.integers(0, everything << 2)


@given(st.data())
def test_fast_operators_return_what_flag_returns(data: st.DataObject) -> None:
    cls = data.draw(st.sampled_from(_CLASSES))
    a = cls(data.draw(_values(cls)))
    b = cls(data.draw(_values(cls)))
    assert cls.__and__ is not enum.Flag.__and__ and cls.__or__ is not enum.Flag.__or__
    for fast, reference in ((a & b, enum.Flag.__and__(a, b)), (a | b, enum.Flag.__or__(a, b))):
        assert fast is reference
        assert type(fast) is cls
    # an int operand keeps Flag's behaviour (a member of the class, on either side)
    n = data.draw(st.integers(0, 1 << 20))
    assert a & n == enum.Flag.__and__(a, n) and type(a & n) is cls
    assert a | n == enum.Flag.__or__(a, n) and type(n | a) is cls
