"""The `vmmio` command: run guest images, show the demo, decode instruction bytes."""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from vmmio.abi import InoutExit, InstEmulExit, MmioExit, VmExit

if TYPE_CHECKING:
    from vmmio.machine import Machine

EPILOG = """\
exit status of `vmmio run` and `vmmio demo` (the last line on stderr always says what happened):
  0    the guest exited with status 0, or halted
  1    the guest exited with a non-zero status (see --guest-status)
  2    bad command line
  3    the image cannot be read or loaded
  4    the guest stopped: shutdown (triple fault) or an instruction vmmio cannot emulate
  5    --max-exits or --timeout reached
  6    the execution backend cannot run here
  130  interrupted (Ctrl-C, SIGTERM)
  141  output closed (broken pipe)

examples:
  vmmio demo                         run the built-in hello guest
  vmmio run guest.bin --trace        run a flat 64-bit image, printing every exit
  vmmio run guest.elf --backend kvm  the same guest under KVM (Linux's emulator)
  vmmio serve --socket /tmp/vmm.sock serve VMs (the kernel) to client processes
  vmmio run hello --remote auto      run a guest with the kernel in a private server process
  vmmio decode 8b4308 f3a5           decode instruction bytes (64-bit mode)
  vmmio decode --mode 16 8b07 --json
"""


EXIT_OK, EXIT_GUEST, EXIT_USAGE, EXIT_IMAGE, EXIT_STOPPED, EXIT_LIMIT, EXIT_BACKEND = range(7)
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141
# How a run ended -> the command's exit status (RunResult.reason).
RUN_STATUS = {
    "hlt": EXIT_OK,
    "shutdown": EXIT_STOPPED,
    "inst_emul": EXIT_STOPPED,
    "limit": EXIT_LIMIT,
    "timeout": EXIT_LIMIT,
    "interrupted": EXIT_INTERRUPTED,
    "terminated": EXIT_INTERRUPTED,
}
MIN_RAM, MAX_RAM = 2 << 20, 3 << 30  # the default layout: tables and image below 2 MiB, devices above 3 GiB


class CliError(Exception):
    """A user-facing error: printed as one line, with its exit status (bad usage by default)."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


def _int(text: str) -> int:
    """A non-negative integer in any base (0x.., 0o.., decimal) with an optional K/M/G suffix."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    scale = units.get(text[-1:].lower(), 1)
    body = text[:-1] if scale != 1 else text
    try:
        value = int(body, 0) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _ram(text: str) -> int:
    size = _int(text)
    if not MIN_RAM <= size <= MAX_RAM or size % 4096:
        raise argparse.ArgumentTypeError(
            f"{text!r}: guest RAM must be a multiple of 4K from 2M to 3G (devices live above it)"
        )
    return size


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def describe_exit(ex: VmExit) -> dict[str, Any]:
    """One exit as a JSON-friendly dict (the --trace-json line format)."""
    if isinstance(ex, MmioExit):
        return {"kind": "mmio", "gpa": ex.gpa, "size": ex.size, "write": ex.is_write, "data": ex.data}
    if isinstance(ex, InoutExit):
        return {"kind": "inout", "port": ex.port, "size": ex.size, "in": ex.is_in, "data": ex.data}
    if isinstance(ex, InstEmulExit):
        return {"kind": "inst_emul", "rip": ex.rip, "bytes": ex.insn.hex(), "reason": ex.reason.name}
    return {"kind": type(ex).__name__.removesuffix("Exit").lower()}


def format_exit(ex: VmExit) -> str:
    """One exit as a trace line."""
    d = describe_exit(ex)
    if d["kind"] == "mmio":
        rw = f"write {d['data']:#x}" if d["write"] else "read"
        return f"mmio  {d['gpa']:#x} size {d['size']} {rw}"
    if d["kind"] == "inout":
        io = "in" if d["in"] else f"out {d['data']:#x}"
        return f"inout port {d['port']:#x} size {d['size']} {io}"
    if d["kind"] == "inst_emul":
        return f"inst_emul rip {d['rip']:#x} bytes {d['bytes']} ({d['reason']})"
    return str(d["kind"])


def _tracer(text: bool, json_file: IO[str] | None) -> Callable[[VmExit], None] | None:
    if not text and json_file is None:
        return None

    def trace(ex: VmExit) -> None:
        if text:
            print(f"[exit] {format_exit(ex)}", file=sys.stderr)
        if json_file is not None:
            json_file.write(json.dumps(describe_exit(ex)) + "\n")

    return trace


def _uart_out(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def run_image(args: argparse.Namespace, data: bytes, name: str) -> int:
    from vmmio.machine import Layout, Machine, RunControl

    remote = getattr(args, "remote", None)
    if remote is not None:
        machine = _remote_machine(args, remote)
    else:
        machine = Machine(Layout(ram_size=args.ram), uart_sink=_uart_out)
    try:
        image = machine.load(data, args.load_addr)
    except (ValueError, IndexError, struct.error) as err:
        raise CliError(f"cannot load {name}: {err}", EXIT_IMAGE) from None
    try:
        vcpu = machine.vcpu(image, args.backend)
    except OSError as err:
        raise CliError(f"cannot start the {args.backend} backend: {err}", EXIT_BACKEND) from None
    try:
        json_file = open(args.trace_json, "w") if args.trace_json else None  # noqa: SIM115
    except OSError as err:
        raise CliError(f"cannot write {args.trace_json}: {err.strerror}") from None
    try:
        with RunControl(vcpu, args.timeout) as control:
            result = machine.run(vcpu, _tracer(args.trace, json_file), args.max_exits, control)
    finally:
        if json_file is not None:
            json_file.close()
    if args.trace:
        print(f"[vmmio] {result.exits} exits, status {result.status}", file=sys.stderr)
    if result.reason == "exit":
        if result.status:
            print(f"vmmio: guest exited with status {result.status}", file=sys.stderr)
        if args.guest_status:
            return result.status & 0xFF
        return EXIT_GUEST if result.status else EXIT_OK
    if result.reason != "hlt":
        print(f"vmmio: guest stopped: {result.reason} {result.detail}".rstrip(), file=sys.stderr)
    return RUN_STATUS[result.reason]


def _remote_machine(args: argparse.Namespace, remote: str) -> Machine:
    """A Machine whose kernel is `vmmio serve` at the socket `remote`, or a private one ("auto")."""
    from vmmio.machine import Layout
    from vmmio.service.client import Client, RemoteMachine, ServiceError, spawn_server

    if args.backend != "unicorn":
        raise CliError("--remote runs on the server's unicorn backend only")
    try:
        if remote == "auto":
            client, server = spawn_server()
            _SERVERS.append(server)
        else:
            client = Client.connect(remote)
        return RemoteMachine(client, Layout(ram_size=args.ram), uart_sink=_uart_out)
    except (OSError, ServiceError) as err:
        raise CliError(f"cannot use the server at {remote}: {err}", EXIT_BACKEND) from None


_SERVERS: list[Any] = []  # private servers started by --remote auto; they exit when we close the socket


def cmd_serve(args: argparse.Namespace) -> int:
    from vmmio.service.server import serve, serve_fd

    if args.fd is not None:
        return serve_fd(args.fd)
    return serve(args.socket)


def cmd_run(args: argparse.Namespace) -> int:
    from vmmio import guests

    path = Path(args.image)
    if not path.exists() and args.image in guests.NAMES:
        return run_image(args, guests.load(args.image), args.image)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CliError(f"cannot read {args.image}: {err.strerror}", EXIT_IMAGE) from None
    if not data:
        raise CliError(f"{args.image} is empty", EXIT_IMAGE)
    return run_image(args, data, args.image)


def cmd_demo(args: argparse.Namespace) -> int:
    from vmmio import guests

    args.load_addr = 0x10_0000
    return run_image(args, guests.load("hello"), "hello")


def decode_one(text: str, mode: int) -> dict[str, Any]:
    """Decode one hex string: length, mnemonic, whether vmmio emulates it, operand details."""
    from vmmio.vmm.semantics import lookup
    from vmmio.x86.decode import decode
    from vmmio.x86.format import format_insn
    from vmmio.x86.insn import Insn

    try:
        code = bytes.fromhex(text.replace(" ", "").replace(":", ""))
    except ValueError:
        raise CliError(f"not hex bytes: {text!r}") from None
    if not code:
        raise CliError("empty instruction")
    result = decode(code, mode)
    out: dict[str, Any] = {"bytes": code.hex(), "mode": mode}
    if not isinstance(result, Insn):
        out.update(length=None, mnemonic=None, emulated=False, error=result.status.name, detail=result.detail)
        return out
    mem = result.mem
    out.update(
        length=result.length,
        mnemonic=result.mnemonic,
        emulated=lookup(result) is not None,
        text=format_insn(result),
        opsize=result.opsize,
        addr_size=result.addr_size,
        memory=None
        if mem is None
        else {"seg": mem.seg, "base": mem.base, "index": mem.index, "scale": mem.scale, "disp": mem.disp},
    )
    if result.length < len(code):
        out["trailing"] = code[result.length :].hex()
    return out


def cmd_decode(args: argparse.Namespace) -> int:
    rows = [decode_one(text, args.mode) for text in args.hex]
    for row in rows:
        if args.json:
            print(json.dumps(row))
        elif row["length"] is None:
            print(f"{row['bytes']:30} cannot decode: {row['error'].lower()} ({row['detail']})")
        else:
            emulated = "emulated" if row["emulated"] else "not emulated"
            print(f"{row['bytes']:30} {row['text']:34} len {row['length']:2}  {emulated}")
    return 0 if all(row["length"] is not None for row in rows) else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vmmio",
        description="x86 MMIO and port-I/O instruction emulation for VMMs: run guests, decode instructions.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def run_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--backend", choices=["unicorn", "kvm"], default="unicorn", help="execution backend")
        sp.add_argument("--ram", type=_ram, default=32 << 20, help="guest RAM size, e.g. 64M (default 32M)")
        sp.add_argument("--trace", action="store_true", help="print every exit to stderr")
        sp.add_argument("--trace-json", metavar="FILE", help="write every exit as one JSON line to FILE")
        sp.add_argument("--max-exits", type=_int, default=0, help="stop after this many exits (0: no limit)")
        sp.add_argument(
            "--timeout", type=_seconds, metavar="SECONDS", help="stop the guest after this long, exits or not"
        )
        sp.add_argument(
            "--guest-status",
            action="store_true",
            help="exit with the guest's own status (0-255) when it exits through the debug device",
        )

    r = sub.add_parser("run", help="run a guest image (flat 64-bit binary, ELF32 or ELF64)")
    r.add_argument("image", help="path of the image, or the name of a shipped guest (hello, insntest)")
    r.add_argument("--load-addr", type=_int, default=0x10_0000, help="load address of a flat image")
    r.add_argument(
        "--remote",
        metavar="SOCKET",
        help="run the kernel in `vmmio serve` listening at SOCKET, or in a private server ('auto')",
    )
    run_options(r)
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="run the built-in hello guest")
    run_options(d)
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("serve", help="serve VMs to other processes over a Unix socket (docs/transport.md)")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", metavar="PATH", help="listen on this Unix socket (one process per client)")
    where.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # one connected socket (--remote auto)
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("decode", help="decode instruction bytes given in hex")
    c.add_argument("hex", nargs="+", help="instruction bytes, e.g. 8b4308 or '8b 43 08'")
    c.add_argument("--mode", type=int, choices=[16, 32, 64], default=64, help="code size (default 64)")
    c.add_argument("--json", action="store_true", help="one JSON object per argument")
    c.set_defaults(func=cmd_decode)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except CliError as err:
        print(f"vmmio: {err}", file=sys.stderr)
        return err.status
    except KeyboardInterrupt:  # outside a run (a run stops cleanly through RunControl)
        print("vmmio: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Whoever read our output went away: say nothing more on it, and exit without a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    return status


if __name__ == "__main__":
    sys.exit(main())
