"""Trigger -> ResultValid latency of the PLC handshake, as a PLC sees it, with the shipped model.

    .venv/bin/python benchmarks/plc_latency.py [--parts 200] [--protocol opcua|modbus] [--threads 1]

Starts the line service in-process on the demo boards (trigger mode), then acts as the PLC over a real
client (asyncua / pymodbus): write PartId, set Trigger, poll ResultValid every millisecond, read the
verdict, Ack, wait for Ready. The time from the Trigger write to the first read that shows ResultValid is
one sample; it includes the client round trips, capture, the pipe to the detector process, inference,
the SQLite commit (synchronous=FULL) and the server's variable updates.
"""
from __future__ import annotations

import argparse
import logging
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspector.service import Service, ServiceConfig  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the station did not answer")
        time.sleep(0.001)


def opcua_parts(endpoint: str, parts: int) -> list[float]:
    from asyncua.sync import Client

    client = Client(endpoint, timeout=10)
    client.connect()
    try:
        index = client.get_namespace_index("urn:pcb-inspector")
        line = client.nodes.objects.get_child([f"{index}:Inspector", f"{index}:line1"])
        node = {name: line.get_child(f"{index}:{name}") for name in
                ("PartId", "Trigger", "ResultValid", "Verdict", "Ack", "Ready")}
        samples = []
        for number in range(parts):
            node["PartId"].write_value(f"BENCH-{number:05d}")
            started = time.perf_counter()
            node["Trigger"].write_value(True)
            wait(lambda: node["ResultValid"].read_value())
            samples.append(time.perf_counter() - started)
            node["Verdict"].read_value()
            node["Ack"].write_value(True)
            wait(lambda: node["Ready"].read_value())
        return samples
    finally:
        client.disconnect()


def modbus_parts(host: str, port: int, parts: int) -> list[float]:
    from pymodbus.client import ModbusTcpClient

    from inspector.service.plc.modbus import text_to_registers

    client = ModbusTcpClient(host, port=port, timeout=5)
    client.connect()
    try:
        samples = []
        for number in range(parts):
            client.write_registers(0, text_to_registers(f"BENCH-{number:05d}", 16))
            started = time.perf_counter()
            client.write_coil(0, True)
            wait(lambda: client.read_discrete_inputs(1, count=1).bits[0])
            samples.append(time.perf_counter() - started)
            client.read_input_registers(0, count=2)
            client.write_coil(1, True)
            wait(lambda: client.read_discrete_inputs(2, count=1).bits[0])
        return samples
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=int, default=200)
    parser.add_argument("--protocol", choices=("opcua", "modbus"), default="opcua")
    parser.add_argument("--threads", type=int, default=1, help="inference threads")
    parser.add_argument("--warmup", type=int, default=5, help="parts before the measured ones")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        plc = {"opcua": f"opc.tcp://127.0.0.1:{port}"} if args.protocol == "opcua" else {"modbus": f"127.0.0.1:{port}"}
        service = Service(ServiceConfig(source="demo", data_dir=Path(data), http=None, line="line1",
                                        threads=args.threads, **plc))
        service.start()
        try:
            run = (lambda n: opcua_parts(plc["opcua"], n)) if args.protocol == "opcua" else \
                (lambda n: modbus_parts("127.0.0.1", port, n))
            run(args.warmup)
            samples = sorted(run(args.parts))
        finally:
            service.stop()
        records = service.journal.count()
    milliseconds = [s * 1e3 for s in samples]
    p50 = statistics.median(milliseconds)
    p99 = milliseconds[min(len(milliseconds) - 1, int(round(0.99 * len(milliseconds))) - 1)]
    print(f"{args.protocol}: {len(samples)} triggered parts ({records} records), model {service.model_name}, "
          f"{args.threads} inference thread(s)")
    print(f"Trigger -> ResultValid: p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {milliseconds[-1]:.1f} ms  "
          f"mean {statistics.fmean(milliseconds):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
