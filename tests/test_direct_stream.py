"""The direct stream's parts on their own: records on real sockets, addresses, the plaintext rule, vsock, and the
host's turn-taking readers (the whole transport runs under every remote test, parametrized by `transport`)."""

from __future__ import annotations

import queue
import random
import socket
import struct
import threading

import pytest

import asylo
from asylo.primitives.matching import Call, Inbox, Result
from asylo.remote import direct_stream
from asylo.remote.direct_link import DirectWriter, ReadTurn
from asylo.remote.direct_stream import RecordStream, parse_address
from asylo.status import Status


@pytest.fixture
def pair() -> tuple[RecordStream, socket.socket]:
    ours, theirs = socket.socketpair()
    stream = RecordStream(ours, "peer")
    yield stream, theirs
    stream.close()
    theirs.close()


def test_records_go_through_whole_and_in_order(pair: tuple[RecordStream, socket.socket]) -> None:
    stream, theirs = pair
    records = [b"", b"x", bytes(range(256)) * 300, b"y" * (2 << 20)]  # the last larger than the read-ahead buffer
    writer = threading.Thread(target=lambda: [RecordStream(theirs.dup(), "us").write(r) for r in records])
    writer.start()
    got = [bytes(record) for _ in records if (record := stream.read(4 << 20)) is not None]
    writer.join()
    assert got == records


def test_a_record_longer_than_the_limit_is_refused_before_it_is_read(pair: tuple[RecordStream, socket.socket]) -> None:
    stream, theirs = pair
    theirs.sendall(struct.pack(">I", 5000) + b"z" * 10)
    with pytest.raises(asylo.InvalidArgumentError, match="a record of 5000 bytes from peer, more than the 4096"):
        stream.read(4096)


def test_the_end_of_the_stream_between_records_and_inside_one(pair: tuple[RecordStream, socket.socket]) -> None:
    stream, theirs = pair
    theirs.sendall(struct.pack(">I", 3) + b"abc" + struct.pack(">I", 10) + b"half")
    theirs.shutdown(socket.SHUT_WR)
    assert bytes(stream.read(100) or b"") == b"abc"
    with pytest.raises(asylo.EnclaveUnavailable, match="ended in the middle of a record"):
        stream.read(100)
    ours, other = socket.socketpair()
    clean = RecordStream(ours, "clean")
    other.close()
    assert clean.read(100) is None
    clean.close()


def test_shutdown_wakes_a_blocked_reader(pair: tuple[RecordStream, socket.socket]) -> None:
    stream, _ = pair
    errors: list[BaseException] = []

    def read() -> None:
        try:
            stream.read(100)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    threading.Timer(0.2, stream.shutdown).start()
    reader.join(5)
    assert not reader.is_alive()
    assert errors == [] or isinstance(errors[0], asylo.EnclaveUnavailable)


@pytest.mark.parametrize(("text", "family", "sockaddr"), [
    ("127.0.0.1:80", socket.AF_INET, ("127.0.0.1", 80)),
    ("localhost:4321", socket.AF_INET, ("127.0.0.1", 4321)),
    ("[::1]:9", socket.AF_INET6, ("::1", 9)),
    ("vsock:3:5000", getattr(socket, "AF_VSOCK", -1), (3, 5000)),
])
def test_addresses(text: str, family: int, sockaddr: tuple[object, int]) -> None:
    if family == -1:
        pytest.skip("no AF_VSOCK on this system")
    address = parse_address(text)
    assert (address.family, address.sockaddr) == (family, sockaddr)


@pytest.mark.parametrize("text", ["nohost", "host:", "host:99999", "[::1", "vsock:x:1", "vsock:3"])
def test_bad_addresses_are_refused_with_what_is_expected(text: str) -> None:
    with pytest.raises(asylo.InvalidArgumentError, match=r"expected .*(host:port|vsock:CID:PORT)"):
        parse_address(text)


@pytest.mark.parametrize("target", ["192.0.2.1:4321", "vsock:3:5000", "example.com:1"])
def test_plaintext_off_loopback_is_refused_before_anything_is_sent(target: str) -> None:
    with pytest.raises(asylo.FailedPreconditionError, match="refusing plaintext"):
        direct_stream.connect(target, asylo.ClientCredentials.insecure_loopback(), 1.0)
    with pytest.raises(asylo.FailedPreconditionError, match="refusing to listen without TLS"):
        direct_stream.listen("0.0.0.0:0", asylo.ServerCredentials.insecure_loopback())


def test_a_refused_connection_says_so() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(asylo.EnclaveUnavailable, match=f"cannot connect to 127.0.0.1:{port}"):
        direct_stream.connect(f"127.0.0.1:{port}", asylo.ClientCredentials.insecure_loopback(), 2.0)


def test_a_vsock_listener(tmp_path: object) -> None:
    """AF_VSOCK where the machine has it. Connecting needs a vsock transport to a VM (or vsock_loopback), which this
    machine may lack: then only the listening side is tested, and a TLS-less vsock listener is refused."""
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        pytest.skip("no AF_VSOCK on this system")
    with pytest.raises(asylo.FailedPreconditionError, match="refusing to listen without TLS"):
        direct_stream.listen("vsock:4294967295:0", asylo.ServerCredentials.insecure_loopback())
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.bind((socket.VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
    except OSError as exc:
        pytest.skip(f"AF_VSOCK sockets cannot bind here: {exc}")
    finally:
        probe.close()


def test_waiting_threads_take_turns_reading_and_everyone_gets_their_own() -> None:
    """16 threads each wait for 50 messages; whichever holds the turn 'reads' (here: hands out the next message,
    to any thread); nobody hangs, nothing is lost or given to the wrong thread."""
    threads, per_thread = 16, 50
    inboxes: dict[int, Inbox] = {key: queue.SimpleQueue() for key in range(threads)}
    plan = [key for key in range(threads) for _ in range(per_thread)]
    random.Random(7).shuffle(plan)
    lock = threading.Lock()
    reads = []

    def read_one() -> None:
        with lock:
            key = plan.pop() if plan else None
            reads.append(threading.get_ident())
        if key is not None:
            inboxes[key].put(Result(len(plan), key, Status()))

    turn = ReadTurn(read_one)
    got: dict[int, list[int]] = {key: [] for key in range(threads)}

    def wait(key: int) -> None:
        for _ in range(per_thread):
            message = turn.next_message(inboxes[key])
            assert isinstance(message, Result | Call) and message.thread == key
            got[key].append(message.call_id)

    workers = [threading.Thread(target=wait, args=(key,)) for key in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(20)
    assert not any(worker.is_alive() for worker in workers)
    assert sorted(call_id for ids in got.values() for call_id in ids) == list(range(threads * per_thread))


def test_a_thread_waiting_when_the_stream_ends_is_told() -> None:
    turn = ReadTurn(lambda: turn.end("the stream is over"))
    message = turn.next_message(queue.SimpleQueue())
    with pytest.raises(asylo.EnclaveUnavailable, match="the stream is over"):
        message.status.raise_for_status()  # type: ignore[union-attr]


def test_an_interrupt_while_writing_a_record_ends_the_session_cleanly(pair: tuple[RecordStream, socket.socket]) -> None:
    """Ctrl-C while a record is being sealed or sent (its number spent, or part of it on the wire): the writer ends
    the session at once, saying why, rather than leaving the peer an unreadable stream."""
    stream, _ = pair
    broken: list[str] = []

    def interrupted_seal(frame: bytes) -> bytes:
        raise KeyboardInterrupt

    writer = DirectWriter(stream, interrupted_seal, body_budget=1 << 20, on_broken=broken.append)
    with pytest.raises(KeyboardInterrupt):
        writer.put([b"a frame"])
    assert broken == ["interrupted while writing a record"]
    with pytest.raises(asylo.EnclaveUnavailable, match="interrupted while writing a record"):
        writer.put([b"the next"])
