"""The moving parts of ``FaultProxy``: the fault switches and one proxied connection.

Everything here runs in the proxy's trio loop; ``FaultProxy`` hands calls from other threads over.
Each direction of a connection is a reader and a writer joined by an unbounded queue: the reader
never stops (so a partition holds the bytes in the proxy, as the network would hold them in
retransmission), and the writer delivers them in order once the link may deliver and their
latency has passed.
"""

from __future__ import annotations

import contextlib
import math
import random
import socket
import struct

import trio

__all__ = ["Faults", "Link"]

_READ_SIZE = 1 << 16
#: SO_LINGER on, timeout 0: close() sends RST instead of FIN.
_LINGER_RST = struct.pack("ii", 1, 0)


class Faults:
    """The switches, shared by every link; any change wakes the links waiting on one."""

    def __init__(self, seed: int | None) -> None:
        self.partitioned = False
        self.blackholing = False
        self.latency = 0.0
        self.jitter = 0.0
        self.rate: float | None = None
        self.resets = 0
        self.delivered = 0
        self.rng = random.Random(seed)
        self._changed = trio.Event()

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def delay(self) -> float:
        if self.latency <= 0:
            return 0.0
        return max(0.0, self.latency + self.rng.uniform(-self.jitter, self.jitter))


class _Direction:
    """Per-direction delivery clocks: latency keeps order, bandwidth paces the writes."""

    def __init__(self) -> None:
        self.last_due = -math.inf
        self.next_free = -math.inf


class Link:
    """One client connection and its connection to the target, with the faults applied."""

    def __init__(self, faults: Faults, client: trio.SocketStream) -> None:
        self.faults = faults
        self.client = client
        self.upstream: trio.SocketStream | None = None
        self.blackholed = faults.blackholing
        self.buffered = 0
        self.scope = trio.CancelScope()

    @property
    def held(self) -> bool:
        return self.blackholed or self.faults.partitioned

    async def run(self, host: str, port: int) -> None:
        """Connect once the link may deliver, then pump both ways until either side closes."""
        with self.scope:
            try:
                while self.held:
                    await self.faults.wait_changed()
                try:
                    self.upstream = await trio.open_tcp_stream(host, port)
                except OSError:
                    return  # the target is down: the client sees its connection closed
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._direction, self.client, self.upstream)
                    nursery.start_soon(self._direction, self.upstream, self.client)
            finally:
                self.close()

    def reset(self) -> None:
        """Close both sockets with RST at once; the link's tasks end with it."""
        for stream in (self.client, self.upstream):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        self.close()

    def close(self) -> None:
        self.scope.cancel()
        for stream in (self.client, self.upstream):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.socket.close()

    async def _direction(self, src: trio.SocketStream, dst: trio.SocketStream) -> None:
        send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)
        clocks = _Direction()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, src, send, clocks)
            await self._write(receive, dst, clocks)
        # The end of the stream was delivered: the whole connection ends, as with Redis.
        self.scope.cancel()

    async def _read(
        self,
        src: trio.SocketStream,
        out: trio.MemorySendChannel[tuple[float, bytes]],
        clocks: _Direction,
    ) -> None:
        while True:
            try:
                data = await src.receive_some(_READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if self.blackholed:
                if not data:
                    await trio.sleep_forever()  # a half-open socket: nobody hears the FIN
                continue
            now = trio.current_time()
            due = max(clocks.last_due, now + self.faults.delay())
            clocks.last_due = due
            self.buffered += len(data)
            out.send_nowait((due, bytes(data)))
            if not data:
                return

    async def _write(
        self,
        inbox: trio.MemoryReceiveChannel[tuple[float, bytes]],
        dst: trio.SocketStream,
        clocks: _Direction,
    ) -> None:
        async for due, data in inbox:
            await self._wait_deliverable(due)
            if not data:
                return
            try:
                await self._send_paced(dst, data, clocks)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            self.buffered -= len(data)
            self.faults.delivered += len(data)

    async def _wait_deliverable(self, due: float) -> None:
        while True:
            if self.blackholed:
                await trio.sleep_forever()
            if self.faults.partitioned:
                await self.faults.wait_changed()
                continue
            if trio.current_time() < due:
                with trio.move_on_at(due):
                    await self.faults.wait_changed()
                continue
            return

    async def _send_paced(self, dst: trio.SocketStream, data: bytes, clocks: _Direction) -> None:
        rate = self.faults.rate
        if rate is None:
            await dst.send_all(data)
            return
        piece = max(1, int(rate / 50))  # ~20 ms of bytes per write: smooth, not one big burst
        for start in range(0, len(data), piece):
            chunk = data[start : start + piece]
            await trio.sleep_until(clocks.next_free)
            await self._wait_deliverable(-math.inf)
            await dst.send_all(chunk)
            clocks.next_free = max(trio.current_time(), clocks.next_free) + len(chunk) / rate
