"""Registering handlers, their order, and dispatch() (no network needed)."""

from __future__ import annotations

import gc
import logging
import random
from typing import Any, List, Tuple

import pytest
from app_helpers import Recorder

from lomond import events
from lomond.events import Binary, Closing, Connected, Disconnected, Event, Ready, Text
from lomond.handlers import Outcome, WebSocketApp

URL = "ws://example.invalid/feed"


def make_app(**kwargs: Any) -> WebSocketApp:
    return WebSocketApp(URL, **kwargs)


# -- on() and off() -------------------------------------------------------------------


def test_on_returns_the_function_unchanged() -> None:
    app = make_app()

    def handler(event: Text) -> str:
        return "result"

    assert app.on("text")(handler) is handler
    assert app.on(Text, handler) is handler
    decorated = app.on("binary")(handler)
    assert decorated is handler and decorated(Text("x")) == "result"


@pytest.mark.parametrize("name", sorted(events.EVENT_TYPES))
def test_every_event_name_and_class_is_accepted(name: str) -> None:
    app = make_app()
    by_name, by_class = Recorder(), Recorder()
    app.on(name, by_name)
    app.on(events.EVENT_TYPES[name], by_class)
    other = Text("x") if name != "text" else Binary(b"x")
    app.dispatch(other)
    assert by_name.events == by_class.events == []


@pytest.mark.parametrize(
    "bad",
    ["txt", "", "Text", "error", "event", object, int, 42, None, type("Mine", (Text,), {})],
)
def test_unknown_events_are_refused(bad: Any) -> None:
    app = make_app()
    with pytest.raises(ValueError):
        app.on(bad)
    with pytest.raises(ValueError):
        app.on(bad, lambda event: None)
    if bad is not None:  # off(handler, None) means "from every event"
        with pytest.raises(ValueError):
            app.off(lambda event: None, bad)


def test_non_callable_handler_refused() -> None:
    app = make_app()
    with pytest.raises(TypeError):
        app.on("text", "not a function")  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        app.on("text")(42)  # type: ignore[arg-type]


def test_star_and_event_class_receive_everything() -> None:
    app = make_app()
    star, base = Recorder(), Recorder()
    app.on("*", star)
    app.on(Event, base)
    sent = [Connected("ws://x/"), Text("a"), Binary(b"b"), Disconnected("gone")]
    for event in sent:
        app.dispatch(event)
    assert star.events == sent
    assert base.events == sent


def test_handlers_run_in_registration_order() -> None:
    # Many handlers, interleaving "*", names and classes: blinker's set-based
    # dispatch would scramble them; the registry must not.
    app = make_app()
    calls: List[Tuple[int, str]] = []
    expected_text: List[int] = []
    expected_binary: List[int] = []
    rng = random.Random(7)
    for number in range(300):
        key: Any = rng.choice(["*", Event, "text", Text, "binary", Binary])

        def handler(event: Event, number: int = number) -> None:
            calls.append((number, event.name))

        app.on(key, handler)
        if key in ("*", Event, "text", Text):
            expected_text.append(number)
        if key in ("*", Event, "binary", Binary):
            expected_binary.append(number)
    app.dispatch(Text("t"))
    app.dispatch(Binary(b"b"))
    assert calls == [(n, "text") for n in expected_text] + [(n, "binary") for n in expected_binary]


def test_same_handler_twice_for_one_event_is_called_once() -> None:
    app = make_app()
    recorder = Recorder()
    app.on("text", recorder)
    app.on(Text, recorder)
    app.on("*", recorder)  # another key: called for that one too
    app.dispatch(Text("x"))
    assert recorder.names == ["text", "text"]


def test_off_everywhere_and_for_one_event() -> None:
    app = make_app()
    recorder, other = Recorder(), Recorder()
    app.on("text", recorder)
    app.on("binary", recorder)
    app.on("*", recorder)
    app.on("text", other)
    assert app.off(recorder, "binary") is True
    app.dispatch(Binary(b"1"))
    assert recorder.names == ["binary"]  # from "*" only
    assert app.off(recorder) is True
    assert app.off(recorder) is False
    app.dispatch(Text("2"))
    app.dispatch(Binary(b"3"))
    assert recorder.names == ["binary"]
    assert other.names == ["text"]  # untouched
    assert app.off(other, Text) is True
    app.dispatch(Text("4"))
    assert other.names == ["text"]


def test_registration_during_dispatch_applies_from_the_next_event() -> None:
    app = make_app()
    late = Recorder()

    @app.on("text")
    def register_another(event: Text) -> None:
        app.on("text", late)
        app.off(register_another)

    app.dispatch(Text("first"))
    assert late.events == []
    app.dispatch(Text("second"))
    assert [e.text for e in late.of(Text)] == ["second"]


def test_lambdas_and_closures_are_not_garbage_collected() -> None:
    app = make_app()
    seen: List[str] = []

    def register() -> None:
        prefix = "closure:"

        def closure(event: Text) -> None:
            seen.append(prefix + event.text)

        app.on("text", closure)
        app.on("text", lambda event: seen.append("lambda:" + event.text))
        app.on_error_signal.connect(lambda sender, **kw: seen.append("signal"))

    register()
    gc.collect()
    app.dispatch(Text("x"))
    assert seen == ["closure:x", "lambda:x"]
    app.on("binary", lambda event: 1 / 0)
    gc.collect()
    app.dispatch(Binary(b""))
    assert seen[-1] == "signal"


def test_handlers_are_per_app() -> None:
    first, second = make_app(), make_app()
    recorder = Recorder()
    first.on("text", recorder)
    first.on_error_signal.connect(recorder)
    second.dispatch(Text("x"))
    second.on("text", lambda event: 1 / 0)
    second.dispatch(Text("y"))
    assert recorder.events == []
    assert first.signals is not second.signals


# -- subclasses -------------------------------------------------------------------------


class Feed(WebSocketApp):
    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.calls: List[str] = []

    def on_event(self, event: Event) -> None:
        self.calls.append(f"on_event:{event.name}")

    def on_text(self, event: Text) -> None:
        self.calls.append(f"on_text:{event.text}")

    def on_ready(self, event: Ready) -> None:
        self.calls.append("on_ready")


def test_subclass_methods_run_first_then_decorated_handlers() -> None:
    app = Feed(URL)

    @app.on("*")
    def star(event: Event) -> None:
        app.calls.append(f"star:{event.name}")

    @app.on("text")
    def text(event: Text) -> None:
        app.calls.append(f"text:{event.text}")

    app.dispatch(Text("a"))
    app.dispatch(Binary(b"b"))
    assert app.calls == [
        "on_event:text", "on_text:a", "star:text", "text:a",
        "on_event:binary", "star:binary",
    ]


def test_the_constructor_does_not_hide_subclass_methods() -> None:
    app = Feed(URL)
    assert app.on_text.__func__ is Feed.on_text  # type: ignore[attr-defined]
    assert "on_text" not in vars(app)


def test_every_event_name_has_a_method_hook() -> None:
    calls: List[str] = []
    namespace = {
        f"on_{name}": (lambda self, event, name=name: calls.append(name))
        for name in events.EVENT_TYPES
    }
    App = type("App", (WebSocketApp,), namespace)
    app = App(URL)
    for cls in events.EVENT_TYPES.values():
        fields = [a for a in cls.__attrs_attrs__ if a.name != "received_time"]  # type: ignore[attr-defined]
        values = {"response": None, "extensions": frozenset(), "graceful": False}
        kwargs = {a.name: values.get(a.name, "x") for a in fields if a.default is not None}
        try:
            event = cls(**kwargs)
        except TypeError:  # pragma: no cover - a new required field
            pytest.fail(f"cannot build {cls.__name__} for the test")
        app.dispatch(event)
    assert calls == list(events.EVENT_TYPES)


# -- errors in dispatch() -------------------------------------------------------------------


def test_dispatch_close_policy_records_the_error_and_runs_other_handlers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()
    after = Recorder()
    error = RuntimeError("broken handler")

    @app.on("text")
    def broken(event: Text) -> None:
        raise error

    app.on("text", after)
    with caplog.at_level(logging.ERROR, logger="lomond.handlers"):
        app.dispatch(Text("x"))
    assert after.names == ["text"]
    assert app.outcome.error is error
    name = "test_dispatch_close_policy_records_the_error_and_runs_other_handlers.<locals>.broken"
    assert app.outcome == Outcome(
        error=error, handler=name, reason=f"handler {name} raised RuntimeError: broken handler"
    )
    records = [r for r in caplog.records if r.name == "lomond.handlers" and r.exc_info]
    assert records and records[0].exc_info[1] is error  # type: ignore[index]
    assert "broken" in records[0].getMessage()


def test_dispatch_log_policy_keeps_no_error() -> None:
    app = make_app(error_policy="log")
    app.on("text", lambda event: 1 / 0)
    app.dispatch(Text("x"))
    assert app.outcome.error is None


def test_dispatch_raise_policy_raises_after_the_remaining_handlers() -> None:
    app = make_app(error_policy="raise")
    after = Recorder()
    app.on("text", lambda event: {}["missing"])
    app.on("text", after)
    with pytest.raises(KeyError):
        app.dispatch(Text("x"))
    assert after.names == ["text"]


def test_dispatch_callable_policy_decides_per_error() -> None:
    decisions: List[Tuple[str, type]] = []

    def policy(event: Event, exc: Exception) -> str:
        decisions.append((event.name, type(exc)))
        return "log" if isinstance(exc, ValueError) else "raise"

    app = make_app(error_policy=policy)

    @app.on("text")
    def handler(event: Text) -> None:
        if event.text == "value":
            raise ValueError(event.text)
        raise LookupError(event.text)

    app.dispatch(Text("value"))
    assert app.outcome.error is None
    with pytest.raises(LookupError):
        app.dispatch(Text("lookup"))
    assert decisions == [("text", ValueError), ("text", LookupError)]


@pytest.mark.parametrize("result", ["explode", "bad value"])
def test_a_broken_callable_policy_means_close(result: str) -> None:
    def policy(event: Event, exc: Exception) -> str:
        if result == "explode":
            raise RuntimeError("policy bug")
        return result

    app = make_app(error_policy=policy)
    app.on("text", lambda event: 1 / 0)
    app.dispatch(Text("x"))
    assert isinstance(app.outcome.error, ZeroDivisionError)


@pytest.mark.parametrize("policy", ["ignore", "Close", "", None, 3])
def test_unknown_policy_refused_at_construction(policy: Any) -> None:
    with pytest.raises(ValueError):
        make_app(error_policy=policy)


class Fragile(WebSocketApp):
    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.errors: List[Tuple[str, BaseException]] = []

    def on_text(self, event: Text) -> None:
        raise ValueError("in on_text")

    def on_error(self, event: Event, exc: Exception) -> None:
        self.errors.append((event.name, exc))
        raise RuntimeError("in on_error")


def test_an_error_in_on_error_is_logged_and_does_not_recurse(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Fragile(URL, error_policy="log")
    signalled: List[Any] = []
    app.on_error_signal.connect(lambda sender, **kw: signalled.append((sender, kw)))
    after = Recorder()
    app.on("text", after)
    with caplog.at_level(logging.ERROR, logger="lomond.handlers"):
        app.dispatch(Text("x"))
    assert [(name, type(exc)) for name, exc in app.errors] == [("text", ValueError)]
    assert len(signalled) == 1
    sender, kwargs = signalled[0]
    assert sender is app
    assert kwargs["event"].text == "x" and isinstance(kwargs["exc"], ValueError)
    assert after.names == ["text"]
    messages = [r.getMessage() for r in caplog.records if r.name == "lomond.handlers"]
    assert any("on_error raised" in m for m in messages), messages


def test_an_error_in_a_signal_receiver_is_logged_and_ignored() -> None:
    app = make_app(error_policy="log")
    second: List[Any] = []
    app.on_error_signal.connect(lambda sender, **kw: 1 / 0)
    app.on_error_signal.connect(lambda sender, **kw: second.append(kw["exc"]))
    app.on("text", lambda event: [][0])
    app.dispatch(Text("x"))
    assert len(second) == 1 and isinstance(second[0], IndexError)


def test_dispatch_updates_the_outcome() -> None:
    app = make_app()
    app.dispatch(Connected("ws://x/"))
    app.dispatch(Closing(4000, "bye"))
    app.dispatch(Disconnected("closed", graceful=True))
    assert app.outcome == Outcome(
        close_code=4000, close_reason="bye", graceful=True, connections=1, reason="closed"
    )


def test_dispatch_needs_an_event() -> None:
    with pytest.raises(TypeError):
        make_app().dispatch("text")  # type: ignore[arg-type]


def test_keyboard_interrupt_in_dispatch_propagates_at_once() -> None:
    app = make_app(error_policy="log")
    after = Recorder()

    def interrupt(event: Event) -> None:
        raise KeyboardInterrupt

    app.on("text", interrupt)
    app.on("text", after)
    with pytest.raises(KeyboardInterrupt):
        app.dispatch(Text("x"))
    assert after.events == []


# -- run_forever() arguments ------------------------------------------------------------


def test_persist_options_need_reconnect() -> None:
    app = make_app()
    with pytest.raises(TypeError, match="reconnect=True"):
        app.run_forever(min_wait=1)
    with pytest.raises(TypeError, match="reconnect=True"):
        app.start(max_wait=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'pol'"):
        app.run_forever(pol=1)
    assert not app.is_running
