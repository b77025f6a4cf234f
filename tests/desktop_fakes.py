"""A desktop's notification server, played by the tests (tests/test_notifications.py): on a
session bus of its own, it owns ``org.freedesktop.Notifications``, keeps what Chromium shows
and closes there, and clicks a notification as a user would (``ActionInvoked``, "default").
Chromium on Linux, headless too, shows web notifications through that server when one is
on its session bus, and a click on one reaches the service worker as a real
``notificationclick`` (the DevTools protocol has no way to click one)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from jeepney import (
    DBusAddress,
    HeaderFields,
    Message,
    MessageType,
    message_bus,
    new_error,
    new_method_return,
    new_signal,
)
from jeepney.io.asyncio import DBusConnection, open_dbus_connection

NAME = "org.freedesktop.Notifications"
SERVER = DBusAddress("/org/freedesktop/Notifications", interface=NAME)


@dataclass
class Shown:
    id: int
    summary: str
    body: str
    actions: list[str]


@dataclass
class NotificationServer:
    """What the Desktop Notifications Specification asks of a server, as far as Chromium uses it."""

    bus: str  # the address, for DBUS_SESSION_BUS_ADDRESS
    connection: DBusConnection
    shown: list[Shown] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)

    async def serve(self) -> None:
        while True:
            message = await self.connection.receive()
            if message.header.message_type == MessageType.method_call:
                await self.connection.send(self.answer(message))

    def answer(self, call: Message) -> Message:
        member = call.header.fields.get(HeaderFields.member)
        if member == "GetCapabilities":
            return new_method_return(call, "as", (["actions", "body"],))
        if member == "GetServerInformation":
            return new_method_return(call, "ssss", ("tests", "jobprogress", "1", "1.2"))
        if member == "Notify":
            _app, _replaces, _icon, summary, body, actions, _hints, _timeout = call.body
            self.shown.append(Shown(len(self.shown) + 1, summary, body, list(actions[::2])))
            return new_method_return(call, "u", (len(self.shown),))
        if member == "CloseNotification":
            self.closed.append(call.body[0])
            return new_method_return(call)
        return new_error(call, "org.freedesktop.DBus.Error.UnknownMethod")

    async def click(self, shown: Shown) -> None:
        """The user clicks the notification itself (its "default" action)."""
        assert "default" in shown.actions, shown
        await self.connection.send(new_signal(SERVER, "ActionInvoked", "us", (shown.id, "default")))


async def _own(connection: DBusConnection, name: str) -> None:
    await connection.send(message_bus.RequestName(name))
    while (reply := await connection.receive()).header.message_type != MessageType.method_return:
        pass
    assert reply.body == (1,), f"{name} not owned: {reply.body}"  # 1: the primary owner


@contextlib.asynccontextmanager
async def session_bus() -> AsyncIterator[str]:
    """A D-Bus session bus of the test's own (Debian's dbus-daemon); its address."""
    daemon = await asyncio.create_subprocess_exec(
        "dbus-daemon", "--session", "--nofork", "--nopidfile", "--print-address=1",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert daemon.stdout is not None
        async with asyncio.timeout(10):
            address = (await daemon.stdout.readline()).decode().strip()
        assert address, "dbus-daemon printed no address"
        yield address
    finally:
        daemon.terminate()
        await daemon.wait()


@pytest.fixture
async def notification_server() -> AsyncIterator[NotificationServer]:
    async with session_bus() as bus:
        connection = await open_dbus_connection(bus)
        server = NotificationServer(bus, connection)
        await _own(connection, NAME)
        serving: asyncio.Task[Any] = asyncio.create_task(server.serve())
        try:
            yield server
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            await connection.close()
