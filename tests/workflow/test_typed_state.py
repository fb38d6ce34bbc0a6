"""Typed views of the state (docs/tasks.md#typed-state): ``Flow.state_as`` with TypedDicts, dataclasses
and pydantic models, and ``Flow.set_from`` writing a model back as changes."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, NewType, NotRequired, TypedDict

import pytest

from dwarf import BadRequestError, StateValidationError
from tests.workflow.test_flow import make_flow


class Size(enum.Enum):
    SMALL = "s"
    LARGE = "l"


@dataclass
class Line:
    sku: str
    qty: int = 1
    size: Size = Size.SMALL


@dataclass
class Order:
    customer: str
    lines: list[Line]
    total: float
    note: str | None = None
    tags: tuple[str, ...] = ()
    rush: bool = False
    extra: dict[str, int] = field(default_factory=dict)


class Address(TypedDict):
    city: str
    zip: NotRequired[str]


class Customer(TypedDict):
    name: str
    address: Address
    vip: bool | None


Cents = NewType("Cents", int)


@dataclass
class Kinds:
    anything: Any
    mode: Literal["fast", "slow"]
    pair: tuple[int, str]
    names: Sequence[str]
    scores: Mapping[str, float]
    cents: Cents
    labelled: Annotated[int, "meta"]
    bare_list: list  # type: ignore[type-arg]
    either: int | str


STATE: dict[str, Any] = {
    "customer": "Ada",
    "lines": [{"sku": "pen", "qty": 3.0, "size": "l"}, {"sku": "ink"}],
    "total": 12,
    "tags": ["new", "eu"],
    "extra": {"points": 7},
    "unrelated": {"kept": "in the state"},
}


# --- dataclasses ---


def test_a_dataclass_is_built_from_its_fields_with_nested_ones_and_conversions() -> None:
    order = make_flow(STATE).state_as(Order)
    assert order == Order(
        customer="Ada",
        lines=[Line("pen", 3, Size.LARGE), Line("ink", 1, Size.SMALL)],
        total=12.0,
        tags=("new", "eu"),
        extra={"points": 7},
    )
    assert isinstance(order.total, float) and isinstance(order.lines[0].qty, int)


def test_the_view_is_a_copy() -> None:
    flow = make_flow(STATE)
    order = flow.state_as(Order)
    order.lines[0].qty = 99
    order.extra["points"] = 0
    assert flow.get("lines")[0]["qty"] == 3.0 and flow.get("extra") == {"points": 7}
    assert flow.changes == {}


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    state = {"lines": [{"sku": 5, "qty": 1.5}, "pen", {"sku": "ink", "size": "xl"}], "total": "12"}
    with pytest.raises(StateValidationError) as caught:
        make_flow(state).state_as(Order)
    message = str(caught.value)
    assert message.startswith("the state does not fit Order: ")
    for fragment in (
        "field 'customer' is missing",
        "field 'lines[0].sku' must be a string, not a number",
        "field 'lines[0].qty' must be an integer, not a number",
        "field 'lines[1]' must be an object, not a string",
        "field 'lines[2].size' must be one of 's', 'l', not 'xl'",
        "field 'total' must be a number, not a string",
    ):
        assert fragment in message
    assert caught.value.status_code == 400


def test_null_reads_as_absent_and_an_optional_field_without_default_is_none() -> None:
    @dataclass
    class Maybe:
        value: int | None
        label: str = "none"

    assert make_flow({"value": None, "label": None}).state_as(Maybe) == Maybe(None, "none")
    assert make_flow({}).state_as(Maybe) == Maybe(None)


def test_post_init_validation_becomes_a_state_validation_error() -> None:
    @dataclass
    class Positive:
        amount: int

        def __post_init__(self) -> None:
            if self.amount <= 0:
                raise ValueError("amount must be positive")

    assert make_flow({"amount": 2}).state_as(Positive).amount == 2
    with pytest.raises(StateValidationError, match="does not fit Positive: amount must be positive"):
        make_flow({"amount": -1}).state_as(Positive)


def test_more_annotations() -> None:
    state = {
        "anything": {"x": [1]},
        "mode": "fast",
        "pair": [1, "a"],
        "names": ["a"],
        "scores": {"a": 1},
        "cents": 250,
        "labelled": 3,
        "bare_list": [1, "x"],
        "either": "text",
    }
    kinds = make_flow(state).state_as(Kinds)
    assert kinds.pair == (1, "a") and kinds.scores == {"a": 1.0} and kinds.either == "text"
    bad = {**state, "mode": "medium", "pair": [1, 2, 3], "either": 1.5, "labelled": True}
    with pytest.raises(StateValidationError) as caught:
        make_flow(bad).state_as(Kinds)
    message = str(caught.value)
    assert "field 'mode' must be one of 'fast', 'slow', not 'medium'" in message
    assert "field 'pair' must have 2 elements, not 3" in message
    assert "field 'either' must be an integer, not a number" in message
    assert "field 'labelled' must be an integer, not a bool" in message


def test_bool_is_not_a_number_and_numbers_are_not_strings() -> None:
    @dataclass
    class Flags:
        count: int
        ratio: float
        on: bool

    with pytest.raises(StateValidationError) as caught:
        make_flow({"count": True, "ratio": False, "on": 1}).state_as(Flags)
    message = str(caught.value)
    assert "'count' must be an integer, not a bool" in message
    assert "'ratio' must be a number, not a bool" in message
    assert "'on' must be a bool, not a number" in message


def test_a_long_list_of_problems_is_cut() -> None:
    @dataclass
    class Many:
        values: list[int]

    with pytest.raises(StateValidationError, match=r"and 15 more$"):
        make_flow({"values": ["x"] * 25}).state_as(Many)


def test_a_model_that_cannot_be_checked_is_a_bad_request_not_a_state_error() -> None:
    @dataclass
    class Stamped:
        at: datetime

    with pytest.raises(BadRequestError) as caught:
        make_flow({"at": "2025-01-01"}).state_as(Stamped)
    assert not isinstance(caught.value, StateValidationError)
    assert "field 'at'" in str(caught.value) and "datetime" in str(caught.value)
    for not_a_model in (int, dict, "Order"):
        with pytest.raises(BadRequestError, match="TypedDict, dataclass or pydantic model"):
            make_flow({}).state_as(not_a_model)  # type: ignore[arg-type]


def test_unresolvable_annotations_are_reported() -> None:
    @dataclass
    class Broken:
        thing: Undefined  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(BadRequestError, match="cannot resolve the annotations of"):
        make_flow({"thing": 1}).state_as(Broken)


# --- TypedDicts ---


def test_a_typeddict_is_the_dict_of_its_declared_keys_checked() -> None:
    state = {"name": "Ada", "address": {"city": "Oslo", "street": "x"}, "vip": None, "other": 1}
    customer = make_flow(state).state_as(Customer)
    assert customer == {"name": "Ada", "address": {"city": "Oslo"}, "vip": None}
    assert type(customer) is dict


def test_a_typeddict_refuses_missing_required_keys_and_wrong_types() -> None:
    with pytest.raises(StateValidationError) as caught:
        make_flow({"address": {"zip": 1}}).state_as(Customer)
    message = str(caught.value)
    assert "does not fit Customer" in message
    assert "field 'name' is missing" in message
    assert "field 'address.city' is missing" in message
    assert "field 'address.zip' must be a string, not a number" in message
    assert "vip" not in message  # bool | None admits the absent field


# --- set_from ---


def test_set_from_records_only_the_fields_that_changed() -> None:
    flow = make_flow(STATE)
    order = flow.state_as(Order)
    order.lines.append(Line("pad", 2, Size.LARGE))
    order.rush = True
    flow.set_from(order)
    assert flow.changes == {
        "lines": [
            {"sku": "pen", "qty": 3, "size": "l"},
            {"sku": "ink", "qty": 1, "size": "s"},
            {"sku": "pad", "qty": 2, "size": "l"},
        ],
        "rush": True,
    }
    # total 12 == 12.0 and tags ["new", "eu"] == ("new", "eu") as JSON: unchanged, not written.


def test_set_from_deletes_fields_set_to_none_and_tells_true_from_one() -> None:
    @dataclass
    class Small:
        count: Any
        note: str | None = None

    flow = make_flow({"count": 1, "note": "x"})
    flow.set_from(Small(count=True, note=None))
    assert flow.changes == {"count": True, "note": None}
    flow = make_flow({})
    flow.set_from(Small(count=1))
    assert flow.changes == {"count": 1}  # an absent note stays absent: no deletion recorded


def test_set_from_takes_a_mapping_and_refuses_non_json_recording_nothing() -> None:
    flow = make_flow({"name": "Ada"})
    flow.set_from({"name": "Ada", "city": "Oslo"})
    assert flow.changes == {"city": "Oslo"}

    @dataclass
    class Stamped:
        ok: int
        at: object

    flow = make_flow({})
    with pytest.raises(BadRequestError, match="state field 'at'"):
        flow.set_from(Stamped(1, {1, 2}))
    assert flow.changes == {}
    with pytest.raises(BadRequestError, match="needs a model instance, not the class"):
        flow.set_from(Stamped)
    with pytest.raises(BadRequestError, match="not a int"):
        flow.set_from(5)


def test_set_from_sees_this_steps_appends() -> None:
    @dataclass
    class Log:
        entries: list[str]

    flow = make_flow({"entries": ["a"]})
    flow.append("entries", "b")
    flow.set_from(flow.state_as(Log))
    assert flow.changes == {} and flow.appends == {"entries": ["b"]}


# --- pydantic ---


def test_a_pydantic_model_validates_itself() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Item(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        sku: str
        qty: int = 1

    class Basket(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        owner: str
        items: list[Item]

    flow = make_flow({"owner": "Ada", "items": [{"sku": "pen", "qty": 2}], "unrelated": 1})
    basket = flow.state_as(Basket)
    assert basket.items[0].qty == 2
    basket.items.append(Item(sku="ink"))
    flow.set_from(basket)
    assert flow.changes == {"items": [{"sku": "pen", "qty": 2}, {"sku": "ink", "qty": 1}]}
    with pytest.raises(StateValidationError, match="does not fit Basket") as caught:
        make_flow({"items": [{"qty": "many"}]}).state_as(Basket)
    assert "owner" in str(caught.value) and "qty" in str(caught.value)
