"""The `vmmio` command: run guests (with traces, records and statistics), replay records, show the
demo, list the shipped guests, and disassemble instruction bytes."""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmmio.machine import Machine

EPILOG = """\
exit status of `vmmio run` and `vmmio demo` (the last line on stderr always says what happened):
  0    the guest exited with status 0, halted, or asked for a reset (a reboot)
  1    the guest exited with a non-zero status (see --guest-status)
  2    bad command line
  3    the image cannot be read or loaded
  4    the guest stopped: shutdown (triple fault) or an instruction vmmio cannot emulate
  5    --max-exits or --timeout reached
  6    the execution backend cannot run here
  130  interrupted (Ctrl-C, SIGTERM)
  141  output closed (broken pipe)

exit status of `vmmio replay`:
  0    every exit matched the record and the run ended as recorded
  1    the replay diverged: the line on stderr names the exit, its RIP, what was expected and seen
  2    bad command line
  3    the record or the image cannot be read, or the image is not the recorded one
  5    --timeout reached;  6  the backend cannot run here;  130  interrupted

exit status of `vmmio decode`: 0 every byte decoded, 1 some bytes did not (listed as (bad)), 2 usage

examples:
  vmmio guests                       list the shipped guests
  vmmio demo                         the exit-by-exit walkthrough, then the built-in hello guest
  vmmio run guest.bin --trace        run a flat 64-bit image, printing every exit
  vmmio run insntest --stats         exits by kind, device, instruction form and RIP, with times
  vmmio run hello --record h.rec     record every exit and the devices' answers ...
  vmmio replay h.rec                 ... and replay them with no devices, checking each exit
  vmmio run guest.elf --backend kvm  the same guest under KVM (Linux's emulator)
  vmmio serve --socket /tmp/vmm.sock serve VMs (the kernel) to client processes
  vmmio run hello --remote auto      run a guest with the kernel in a private server process
  vmmio decode 66 0f 6f 00           one instruction from several hex words
  vmmio decode --file code.bin --addr 0x401000 --count 20
"""

DECODE_EPILOG = """\
input: hex words on the command line are one byte string, in the order written ("8b 43 08",
"0x8b4308" and "8b:43:08" are the same three bytes); --file reads raw bytes from a file, or from
standard input with "-". Every instruction of the input is listed, each at its address: --addr is the
address of the first byte decoded (default: --offset, so a file's listing shows file offsets).

text output, one line per instruction:
  ADDRESS  BYTES  INTEL-SYNTAX  [emulated | not emulated]
  "emulated": vmmio's kernel performs it when it faults on MMIO or a port; "not emulated": it can
  touch a device (a memory operand) but would reach userspace as INST_EMUL; nothing: it never exits
  (register-only forms, branches). Branch targets are absolute addresses.
  Bytes that do not decode are listed as "(bad)" with the reason, and decoding resumes after the
  bytes the decoder consumed (as objdump does).

--json output, one object per line:
  addr       the address, hex string          bytes   the instruction's bytes, hex string
  length     number of bytes                  text    Intel syntax (iced-x86's style)
  mnemonic   the decoder's mnemonic           emulated  true when vmmio emulates it on an exit
  mode       16, 32 or 64                     opsize, addr_size  operand and address size in bytes
  memory     null, or {"seg", "base", "index", "scale", "disp"}: register names (null when absent),
             the displacement as a signed hex string
  imm        null, or the first immediate as a hex string at its encoded width
  prefixes   the prefixes decoded, by name ("lock", "rep", "repne", "fs", "data16", "rex.0x48")
  for bytes that do not decode: addr, bytes, length, error (truncated, too_long, bad_lock, undefined)
  and detail
"""

EXIT_OK, EXIT_GUEST, EXIT_USAGE, EXIT_IMAGE, EXIT_STOPPED, EXIT_LIMIT, EXIT_BACKEND = range(7)
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141
# How a run ended -> the command's exit status (RunResult.reason).
RUN_STATUS = {
    "hlt": EXIT_OK,
    "reset": EXIT_OK,
    "shutdown": EXIT_STOPPED,
    "inst_emul": EXIT_STOPPED,
    "limit": EXIT_LIMIT,
    "timeout": EXIT_LIMIT,
    "interrupted": EXIT_INTERRUPTED,
    "terminated": EXIT_INTERRUPTED,
}
SIMPLE_RAM, PC_RAM = 32 << 20, 256 << 20
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


EXIT_DIVERGED = 1
GUEST_SUMMARIES = {
    "hello": 'prints "Hello from vmmio!" through the MMIO UART, exits with status 0 (a few hundred exits)',
    "insntest": "every emulated instruction form against the test device and RAM; status = failures",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vmmio")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _uart_out(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _tool_options(args: argparse.Namespace, meta: dict[str, Any]) -> Any:
    from vmmio.tools import ToolOptions

    plot = getattr(args, "stats_plot", None)  # `replay` has no statistics options
    if plot:
        from vmmio.plot import FORMATS, missing

        if Path(plot).suffix.lstrip(".").lower() not in FORMATS:
            raise CliError(f"--stats-plot: {plot} must end in {', '.join('.' + f for f in FORMATS)}")
        why = missing()
        if why is not None:
            raise CliError(f"--stats-plot: {why}")
    return ToolOptions(
        trace=args.trace,
        trace_json=args.trace_json,
        record=getattr(args, "record", None),
        record_meta=meta,
        stats=getattr(args, "stats", False),
        stats_plot=getattr(args, "stats_plot", None),
        stats_top=getattr(args, "stats_top", 15),
    )


def _machine(args: argparse.Namespace) -> Machine:
    """The machine the options ask for: `vmmio serve`'s, the PC (--machine pc, --kernel), or the default."""
    from vmmio.machine import Layout, Machine

    machine_kind = getattr(args, "machine", "simple")
    if args.ram is None:
        args.ram = PC_RAM if machine_kind == "pc" else SIMPLE_RAM
    remote = getattr(args, "remote", None)
    if remote is not None:
        if machine_kind == "pc":
            raise CliError("--remote serves the simple machine only (no PC devices over the transport yet)")
        return _remote_machine(args, remote)
    if machine_kind == "pc":
        from vmmio.pc import PcMachine, pc_layout

        return PcMachine(pc_layout(args.ram), uart_sink=_uart_out)
    return Machine(Layout(ram_size=args.ram), uart_sink=_uart_out)


def run_image(
    args: argparse.Namespace, data: bytes, name: str, shipped: bool = False, initrd: bytes | None = None
) -> int:
    from vmmio.machine import RunControl
    from vmmio.record import image_identity
    from vmmio.tools import RunTools

    machine = _machine(args)
    append = getattr(args, "append", None)
    try:
        if getattr(args, "kernel", None):
            image = machine.load(data, name=name, format="linux", cmdline=append, initrd=initrd)
        else:
            image = machine.load(data, args.load_addr, cmdline=append, initrd=initrd)
    except (ValueError, IndexError, struct.error) as err:
        raise CliError(f"cannot load {name}: {err}", EXIT_IMAGE) from None
    meta = {
        "vmmio": _version(),
        "image": image_identity(data, name if shipped else str(Path(name).resolve()), shipped),
        "machine": {
            "ram": args.ram,
            "load_addr": args.load_addr,
            "backend": args.backend,
            "kind": getattr(args, "machine", "simple"),
            "append": append,
        },
        "limits": {"max_exits": args.max_exits, "timeout": args.timeout},
    }
    options = _tool_options(args, meta)
    try:
        vcpu = machine.vcpu(image, args.backend)
    except OSError as err:
        raise CliError(f"cannot start the {args.backend} backend: {err}", EXIT_BACKEND) from None
    try:
        tools = RunTools(options, machine, vcpu, data)
    except OSError as err:
        raise CliError(f"cannot write {err.filename}: {err.strerror}") from None
    with tools:
        started = time.perf_counter()
        with RunControl(vcpu, args.timeout) as control:
            result = machine.run(vcpu, None, args.max_exits, control, observe=tools.observe)
        tools.finish(result, time.perf_counter() - started)
    if args.trace:
        print(f"[vmmio] {result.exits} exits, status {result.status}", file=sys.stderr)
    if result.reason == "exit":
        if result.status:
            print(f"vmmio: guest exited with status {result.status}", file=sys.stderr)
        if args.guest_status:
            return result.status & 0xFF
        return EXIT_GUEST if result.status else EXIT_OK
    if result.reason == "reset":
        print(f"vmmio: guest reset the machine ({result.detail})", file=sys.stderr)
    elif result.reason != "hlt":
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


def _read_image(image: str) -> tuple[bytes, str, bool]:
    """(bytes, name, shipped) of a path, or of a shipped guest named when no such file exists."""
    from vmmio import guests

    path = Path(image)
    if not path.exists() and image in guests.NAMES:
        return guests.load(image), image, True
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CliError(f"cannot read {image}: {err.strerror}", EXIT_IMAGE) from None
    if not data:
        raise CliError(f"{image} is empty", EXIT_IMAGE)
    return data, image, False


def cmd_run(args: argparse.Namespace) -> int:
    if (args.image is None) == (args.kernel is None):
        raise CliError("give an image, or --kernel BZIMAGE (not both)", EXIT_USAGE)
    if args.kernel is None:
        if args.initrd is not None:
            raise CliError("--initrd goes with --kernel", EXIT_USAGE)
        return run_image(args, *_read_image(args.image))
    from vmmio.pc import LINUX_CMDLINE

    args.machine = "pc"
    if args.append is None:
        args.append = LINUX_CMDLINE
    kernel, name, _ = _read_image(args.kernel)
    initrd = _read_image(args.initrd)[0] if args.initrd is not None else None
    return run_image(args, kernel, name, initrd=initrd)


def cmd_demo(args: argparse.Namespace) -> int:
    from vmmio import demo, guests

    demo.main()
    print(f"== the hello guest, run by Machine on the {args.backend} backend ==", flush=True)
    args.load_addr = 0x10_0000
    return run_image(args, guests.load("hello"), "hello", shipped=True)


def cmd_guests(args: argparse.Namespace) -> int:
    from vmmio import guests

    for name in guests.NAMES:
        size = guests.image_path(name).stat().st_size
        print(f"{name:10} {size:6} bytes  {GUEST_SUMMARIES.get(name, '')}")
    print("run one with: vmmio run NAME  (add --trace, --stats or --record FILE)")
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    from vmmio.abi import EntryError
    from vmmio.machine import Layout, RunControl
    from vmmio.record import (
        Divergence,
        RecordError,
        ReplayMachine,
        end_difference,
        image_identity,
        read_recording,
    )
    from vmmio.tools import RunTools, fan_out

    try:
        recording = read_recording(Path(args.record_file).read_bytes())
    except OSError as err:
        raise CliError(f"cannot read {args.record_file}: {err.strerror}", EXIT_IMAGE) from None
    except RecordError as err:
        raise CliError(f"{args.record_file}: {err}", EXIT_IMAGE) from None
    ident = recording.meta.get("image", {})
    setup = recording.meta.get("machine", {})
    if setup.get("kind", "simple") != "simple":
        # A PC's exits depend on when its timers fire: a replay cannot expect the same sequence.
        raise CliError(f"{args.record_file}: only runs of the simple machine can be replayed", EXIT_IMAGE)
    if args.image is None:
        if not ident.get("name"):
            raise CliError(f"{args.record_file} names no image: give it as IMAGE", EXIT_IMAGE)
        data, name, _ = _read_image(str(ident["name"]))
    else:
        data, name, _ = _read_image(args.image)
    if image_identity(data, name, False)["sha256"] != ident.get("sha256"):
        raise CliError(f"{name} is not the recorded image (its SHA-256 is not the record's)", EXIT_IMAGE)
    recorded_backend = str(setup.get("backend", "unicorn"))
    backend = args.backend or recorded_backend
    try:
        machine = ReplayMachine(Layout(ram_size=int(setup["ram"])), recording, backend == recorded_backend)
        image = machine.load(data, int(setup["load_addr"]))
    except (KeyError, TypeError, ValueError, IndexError, struct.error) as err:
        raise CliError(f"cannot set up the recorded machine: {err}", EXIT_IMAGE) from None
    try:
        vcpu = machine.vcpu(image, backend)
    except OSError as err:
        raise CliError(f"cannot start the {backend} backend: {err}", EXIT_BACKEND) from None
    machine.replaying(vcpu)
    options = _tool_options(args, {})
    try:
        tools = RunTools(options, machine, vcpu, data)
    except OSError as err:
        raise CliError(f"cannot write {err.filename}: {err.strerror}") from None
    frames = len(recording.frames)
    observe = fan_out([machine.observe] + ([tools.observe] if tools.observe else []))
    with tools, RunControl(vcpu, args.timeout) as control:
        try:
            result = machine.run(vcpu, None, frames, control, observe=observe)
        except Divergence as d:
            print(f"vmmio: replay diverged at {d}", file=sys.stderr)
            return EXIT_DIVERGED
        except EntryError as err:
            print(f"vmmio: replay diverged after exit {machine.matched}: {err}", file=sys.stderr)
            return EXIT_DIVERGED
    if result.reason in ("interrupted", "terminated", "timeout"):
        print(f"vmmio: replay stopped: {result.reason} after {machine.matched} exits", file=sys.stderr)
        return RUN_STATUS[result.reason]
    why = end_difference(recording, machine.matched, result)
    if why is not None:
        print(f"vmmio: replay diverged: {why}", file=sys.stderr)
        return EXIT_DIVERGED
    end = recording.end
    how = f"{end.get('reason')}, status {end.get('status')}" if end else "the record was cut short"
    print(f"vmmio: replay matched all {frames} exits of {args.record_file} (ended: {how})", file=sys.stderr)
    return EXIT_OK


def _decode_input(args: argparse.Namespace) -> Any:
    """The byte pieces to decode: hex words, or a file / standard input read in chunks."""
    from vmmio.disasm import chunks, parse_hex

    words = list(args.hex)
    if words == ["-"] and args.file is None:
        args.file, words = "-", []
    if args.file is not None and words:
        raise CliError("give hex bytes or --file, not both")
    if args.file is None:
        if not words:
            raise CliError("nothing to decode: give hex bytes, --file PATH or --file -")
        try:
            code = parse_hex(words)
        except ValueError:
            raise CliError(f"not hex bytes: {' '.join(words)!r}") from None
        if args.offset:
            code = code[args.offset :]
        return [code], None
    if args.file == "-":
        return chunks(sys.stdin.buffer, args.offset), None
    try:
        stream: IO[bytes] = open(args.file, "rb")  # noqa: SIM115 -- closed by cmd_decode
    except OSError as err:
        raise CliError(f"cannot read {args.file}: {err.strerror}", EXIT_IMAGE) from None
    return chunks(stream, args.offset), stream


def cmd_decode(args: argparse.Namespace) -> int:
    from vmmio.disasm import disassemble

    pieces, stream = _decode_input(args)
    address = args.offset if args.addr is None else args.addr
    bad = 0
    try:
        for item in disassemble(pieces, args.mode, address, args.count):
            bad += item.insn is None
            if args.json:
                print(json.dumps(item.to_json()))
                continue
            if item.insn is None:
                note = f"{item.error}: {item.detail}"
            elif item.emulated:
                note = "emulated"
            else:
                note = "not emulated" if item.exits else ""
            line = f"{item.address:#10x}  {item.raw.hex(' '):24} {item.text:40} {note}"
            print(line.rstrip())
    finally:
        if stream is not None:
            stream.close()
    return 1 if bad else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vmmio",
        description="x86 MMIO and port-I/O instruction emulation for VMMs: run guests, trace, record and "
        "replay their exits, count them, decode instructions.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"vmmio {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def trace_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--trace", action="store_true", help="print every exit to stderr (docs/trace.md)")
        sp.add_argument(
            "--trace-json", metavar="FILE", help="write every exit as a JSON line to FILE (docs/trace.md)"
        )
        sp.add_argument(
            "--timeout", type=_seconds, metavar="SECONDS", help="stop the guest after this long, exits or not"
        )

    def run_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--backend", choices=["unicorn", "kvm"], default="unicorn", help="execution backend")
        sp.add_argument("--ram", type=_ram, help="guest RAM size, e.g. 64M (default 32M; 256M for the PC)")
        trace_options(sp)
        sp.add_argument("--max-exits", type=_int, default=0, help="stop after this many exits (0: no limit)")
        sp.add_argument(
            "--guest-status",
            action="store_true",
            help="exit with the guest's own status (0-255) when it exits through the debug device",
        )
        sp.add_argument("--record", metavar="FILE", help="record every exit and its answer (docs/record.md)")
        sp.add_argument(
            "--stats",
            action="store_true",
            help="print exits by kind, device, instruction form and RIP, with kernel and device time",
        )
        sp.add_argument(
            "--stats-plot",
            metavar="FILE",
            help="plot exits per second over time by device to FILE (.png/.svg/.pdf; needs vmmio[plot])",
        )
        sp.add_argument("--stats-top", type=_int, default=15, metavar="N", help="rows of the form/RIP tables")

    r = sub.add_parser(
        "run", help="run a guest image (flat 64-bit binary, ELF32/64, multiboot, Linux bzImage)"
    )
    r.add_argument("image", nargs="?", help="path of the image, or a shipped guest's name (vmmio guests)")
    r.add_argument("--kernel", metavar="BZIMAGE", help="boot a Linux kernel on the PC (implies --machine pc)")
    r.add_argument("--initrd", metavar="FILE", help="initial ramdisk for --kernel (an initramfs cpio)")
    r.add_argument(
        "--append", metavar="CMDLINE", help="kernel command line (--kernel default: vmmio.pc.LINUX_CMDLINE)"
    )
    r.add_argument(
        "--machine",
        choices=["simple", "pc"],
        default="simple",
        help="simple: RAM, the UART and test devices (default); pc: 8259, 8254, RTC, i8042, local APIC too",
    )
    r.add_argument("--load-addr", type=_int, default=0x10_0000, help="load address of a flat image")
    r.add_argument(
        "--remote",
        metavar="SOCKET",
        help="run the kernel in `vmmio serve` listening at SOCKET, or in a private server ('auto')",
    )
    run_options(r)
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="the exit-by-exit walkthrough, then the built-in hello guest")
    run_options(d)
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("serve", help="serve VMs to other processes over a Unix socket (docs/transport.md)")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", metavar="PATH", help="listen on this Unix socket (one process per client)")
    where.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # one connected socket (--remote auto)
    s.set_defaults(func=cmd_serve)

    g = sub.add_parser("guests", help="list the shipped guests (run them by name)")
    g.set_defaults(func=cmd_guests)

    rp = sub.add_parser(
        "replay",
        help="re-run a recorded image with no devices, answering from the record and checking every exit",
        epilog="exit status: 0 matched, 1 diverged, 3 record or image unreadable or not the recorded one",
    )
    rp.add_argument("record_file", metavar="RECORD", help="a file written by vmmio run --record")
    rp.add_argument("image", nargs="?", help="the image (default: the path or guest named in the record)")
    rp.add_argument(
        "--backend", choices=["unicorn", "kvm"], help="execution backend (default: the recorded one)"
    )
    trace_options(rp)
    rp.set_defaults(func=cmd_replay)

    c = sub.add_parser(
        "decode",
        help="disassemble instruction bytes (hex words, a file or stdin)",
        epilog=DECODE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("hex", nargs="*", help="instruction bytes in hex: 8b4308, '8b 43 08', 0x8b4308, ...")
    c.add_argument("--file", metavar="PATH", help="read raw bytes from PATH ('-': standard input)")
    c.add_argument("--offset", type=_int, default=0, help="skip this many bytes of the input first")
    c.add_argument("--count", type=_int, metavar="N", help="list at most N instructions")
    c.add_argument("--addr", type=_int, help="address of the first byte decoded (default: --offset)")
    c.add_argument("--mode", type=int, choices=[16, 32, 64], default=64, help="code size (default 64)")
    c.add_argument("--json", action="store_true", help="one JSON object per instruction (see below)")
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
