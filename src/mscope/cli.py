"""The `mscope` command: one entry point, a subcommand per job."""
import argparse
import glob
import json
import os
import sys

from mscope import __version__
from mscope.errors import MscopeError

__all__ = ["main"]


def _cmd_demo(args):
    from mscope.demo import run_demo
    summary = run_demo(seconds=args.seconds, rate=args.rate, stall_us=args.stall_us,
                       stall_every_ms=args.stall_every_ms)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 0


def _cmd_rings(args):
    from mscope.collector import RingReader
    rings = sorted(glob.glob(os.path.join(args.dir, "*.ring")))
    if not rings:
        print(f"no rings in {args.dir}")
        return 0
    print(f"{'ring':<44} {'nf':<12} {'pid':>7} {'state':<7} {'records':>10} "
          f"{'pending':>10} {'dropped':>8}")
    for path in rings:
        try:
            with RingReader(path, claim=False) as r:
                s = r.state()
        except (MscopeError, OSError) as exc:
            print(f"{os.path.basename(path):<44} unreadable: {exc}")
            continue
        print(f"{os.path.basename(path):<44} {s['nf_name']:<12} {s['pid']:>7} "
              f"{s['state']:<7} {s['next_seq'] - s['drop_records']:>10,} "
              f"{s['pending_bytes']:>10,} {s['drop_records']:>8,}")
    return 0


def _cmd_capture_info(args):
    from mscope.capture.info import describe, format_text
    summary = describe(args.capture)
    print(json.dumps(summary, indent=2) if args.json else format_text(summary))
    return 0


def _cmd_paths(args):
    from mscope import paths
    print(f"libmscope   {paths.libmscope()}")
    print(f"include     {paths.include_dir()}")
    print(f"demo        {paths.demo_forwarder()}")
    print(f"link with   -I{paths.include_dir()} -L{paths.native_dir()} -lmscope "
          f"-Wl,-rpath,{paths.native_dir()}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mscope",
        description="Queue-based performance diagnosis for DPDK network-function chains.")
    parser.add_argument("--version", action="version", version=f"mscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "demo", help="record a real DPDK forwarder through the ring and show what was drained",
        description="Run a small DPDK chain (source -> net_ring -> NAT -> net_null) linked "
                    "with libmscope, drain its rings live and summarise them.",
        epilog="example: mscope demo --seconds 3 --rate 500000")
    p.add_argument("--seconds", type=float, default=3.0, help="how long to run (default 3)")
    p.add_argument("--rate", type=float, default=500_000,
                   help="packets per second the source offers (default 500000)")
    p.add_argument("--stall-us", type=float, default=3000.0,
                   help="injected fault: nat stops polling this long (default 3000; 0: none)")
    p.add_argument("--stall-every-ms", type=float, default=500.0,
                   help="how often the stall repeats (default 500)")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "rings", help="list the rings in a registry directory",
        description="List mscope rings: owner, state, records written, bytes not yet "
                    "drained, records dropped.",
        epilog="example: mscope rings /dev/shm/mscope")
    p.add_argument("dir", nargs="?", default=os.environ.get("MSCOPE_DIR", "/dev/shm/mscope"),
                   help="registry directory (default $MSCOPE_DIR or /dev/shm/mscope)")
    p.set_defaults(func=_cmd_rings)

    p = sub.add_parser(
        "capture", help="inspect a capture directory",
        description="Commands on capture directories.")
    csub = p.add_subparsers(dest="capture_command", metavar="SUBCOMMAND")
    pi = csub.add_parser("info", help="summarise a capture: streams, records, time span, losses",
                         epilog="example: mscope capture info ./cap")
    pi.add_argument("capture", help="capture directory")
    pi.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pi.set_defaults(func=_cmd_capture_info)

    p = sub.add_parser(
        "paths", help="where libmscope and its headers are installed",
        description="Print the paths and flags to build an NF against libmscope.",
        epilog="example: gcc nf.c $(pkg-config --cflags --libs libdpdk) "
               "-I$(mscope paths | awk '/^include/{print $2}') ...")
    p.set_defaults(func=_cmd_paths)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (MscopeError, OSError) as exc:
        print(f"mscope: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mscope: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
