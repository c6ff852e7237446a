"""The `mscope` command: one entry point, a subcommand per job."""
import argparse
import glob
import json
import os
import sys
import time

from mscope import __version__
from mscope.argtypes import nf_rate, non_negative, positive, positive_int, seconds, share
from mscope.errors import MscopeError

__all__ = ["main"]


def _cmd_demo(args):
    from mscope.demo import run_demo
    summary = run_demo(seconds=args.seconds, rate=args.rate, stall_us=args.stall_us,
                       stall_every_ms=args.stall_every_ms, keep=args.keep)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 0


def _cmd_simulate(args):
    import shutil
    from pathlib import Path
    from mscope.sim.run import simulate_to_capture
    from mscope.sim.scenario import load_scenario

    scenarios = []
    for path in args.scenario:
        p = Path(path)
        scenarios += sorted(p.glob("*.json")) if p.is_dir() else [p]
    if not scenarios:
        raise MscopeError(f"no scenario files in {', '.join(args.scenario)}")
    loaded = [load_scenario(p) for p in scenarios]   # all valid before any runs
    out = Path(args.out)
    many = len(loaded) > 1
    summaries = []
    for sc in loaded:
        dest = out / sc.name if many else out
        if dest.exists() and any(dest.iterdir()):
            if not args.force:
                raise MscopeError(f"{dest} is not empty (use --force to replace it)")
            shutil.rmtree(dest)
        s = simulate_to_capture(sc, dest, truth=not args.no_truth)
        summaries.append(s)
        if s["faults"] is None:         # --no-truth: no labelling runs
            labels = "not labelled: --no-truth"
        else:
            faults = ", ".join(f"{k} {v:,}" for k, v in s["faults"].items()) or "none"
            labels = f"by fault: {faults}; unexplained {s['unexplained']:,}"
        drops = sum(s["dropped"].values())
        print(f"{sc.name}: {s['packets']:,} packets, {drops:,} dropped, {s['victims']:,} "
              f"victims ({labels}), {s['seconds']['total']:.2f} s -> {dest}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summaries if many else summaries[0], f, indent=2)
    return 0


def _cmd_attach(args):
    from mscope import paths
    cmd = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    if not cmd:
        raise MscopeError("give the DPDK command after --, e.g. mscope attach -- dpdk-testpmd ...")
    lib = paths.libmscope()
    if not lib.exists():
        raise MscopeError(f"{lib} not found: reinstall mscope")
    env = dict(os.environ, MSCOPE_ATTACH="1")
    if args.plugin:
        # EAL refuses a -d path with a world-writable directory above it:
        # then a private copy (paths.plugin_library)
        plugin = paths.plugin_library()
        if plugin != lib:
            print(f"mscope: {lib} is under a world-writable directory, which EAL's -d "
                  f"refuses: loading the copy {plugin}", file=sys.stderr)
        # EAL options come first: right after the program.
        cmd = [cmd[0], "-d", str(plugin), *cmd[1:]]
    else:
        env["LD_PRELOAD"] = " ".join(filter(None, [str(lib), os.environ.get("LD_PRELOAD")]))
    if args.nf_name:
        env["MSCOPE_NF_NAME"] = args.nf_name
    if args.nf_id is not None:
        env["MSCOPE_NF_ID"] = str(args.nf_id)
    if args.dir:
        env["MSCOPE_DIR"] = args.dir
    try:
        os.execvpe(cmd[0], cmd, env)
    except OSError as exc:
        raise MscopeError(f"cannot run {cmd[0]}: {exc.strerror}") from None


def _cmd_inspect(args):
    from mscope.inspect_binary import format_report, inspect_binary
    try:
        result = inspect_binary(args.binary)
    except MscopeError as exc:              # not an ELF file: a usage error
        print(f"mscope: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mscope: error: {args.binary}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    if not result["attach"]:
        print(f"mscope: cannot attach to {args.binary}: {result['reason']}; "
              f"{result['advice']}", file=sys.stderr)
        return 1
    return 0


def _cmd_diagnose(args):
    # One BLAS thread (unless told otherwise), set before numpy loads
    # OpenBLAS: the analyzer's threads are its own (mscope.workers), and
    # on a busy machine OpenBLAS's spinning threads made the slow-flow fit
    # (a ~1000 x 128 least squares) take 0.3-1.2 s instead of 7 ms
    # (bench/analyze.py).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from mscope import workers
    from mscope.diagnose import run_diagnose
    rates = dict(args.peak_rate or [])
    with workers.limit(args.threads):
        run_diagnose(args.capture, json_path=args.json, top=args.top, slo_us=args.slo_us,
                     pattern_threshold=args.pattern_threshold, topology=args.topology,
                     peak_rates={n: mpps / 1000 for n, mpps in rates.items()} or None,
                     progress=sys.stderr.isatty(),
                     window_ms=(args.from_ms, args.to_ms)
                     if args.from_ms is not None or args.to_ms is not None else None,
                     hosts=args.host)
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


def _cmd_capture_index(args):
    from mscope.capture.reindex import index_capture
    t0 = time.monotonic()
    st = index_capture(args.capture, log=lambda line: print(line, file=sys.stderr))
    print(f"{args.capture}: {st.written} of {st.segments} segments indexed "
          f"({st.frames:,} frames), {time.monotonic() - t0:.1f} s"
          + ("" if st.written else "; every segment had its index already"))
    return 0


def _cmd_receive(args):
    from mscope.diagnose import load_topology_hint
    from mscope.receiver import serve
    links = None if args.topology is None else load_topology_hint(args.topology)
    return serve(args.listen, args.out, allow_remote=args.allow_remote,
                 curve_secret_key=args.curve_secret_key, curve_allow=args.curve_allow,
                 stats_s=args.stats, rcvhwm=args.rcvhwm, duration=args.duration,
                 check_payload=args.check_payload, topology=links)


def _cmd_keygen(args):
    from mscope.curve import create_keys
    public, secret = create_keys(args.dir, args.name)
    print(f"public key  {public}   (give to the other side)")
    print(f"secret key  {secret}   (mode 0600; keep it on this host)")
    return 0


def _cmd_testbed(args):
    from mscope.testbed import run_testbed
    s = run_testbed(args.scenario, args.out, time_scale=args.seconds_scale,
                    poll_us=args.poll_us, force=args.force, record_ms=args.record_ms)
    t = s["truth"]
    if t is None:
        print(f"{s['scenario']}: recorded the first {args.record_ms:g} ms of the traffic "
              f"(no truth.json: its labels need the whole run), {s['seconds']:.1f} s "
              f"-> {args.out}")
        t = {"faults": {}}
    faults = ", ".join(f"{k} {v}" for k, v in t["faults"].items()) or "none"
    if s["truth"] is not None:
        print(f"{s['scenario']}: {t['packets']:,} packets, {t['dropped']:,} dropped, "
              f"{t['victims_total']:,} victims (by fault window: {faults}; unexplained "
              f"{t['unexplained']}), {s['seconds']:.1f} s -> {args.out}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(s, f, indent=2)
    return 0


def _cmd_ovs_up(args):
    from mscope.ovs import ovs_up
    st = ovs_up(args.chain, args.run, time_scale=args.seconds_scale, poll_us=args.poll_us,
                perf_metrics=args.perf_metrics)
    names = ", ".join(p["name"] for p in st["processes"])
    print(f"ovs: chain up in {st['run_dir']}: {names}")
    print(f"  bridge {st['bridge']}: {', '.join(st['ports'])} (vhost-user sockets in "
          f"{st['run_dir']})")
    print(f"  traffic in: any DPDK app with --vdev=net_virtio_user0,path="
          f"{st['run_dir']}/src --single-file-segments")
    print(f"  recording into {st['registry']}: mscope-collect --dir {st['registry']} --out DIR")
    print(f"  stop: mscope ovs down --run {st['run_dir']}")
    return 0


def _cmd_ovs_down(args):
    from mscope.ovs import ovs_down
    r = ovs_down(args.run)
    print(f"ovs: stopped {len(r['stopped'])} processes, removed {len(r['removed'])} "
          f"DPDK runtime and hugepage files")
    return 0


def _cmd_ovs_run(args):
    from mscope.ovs import run_ovs
    s = run_ovs(args.scenario, args.out, time_scale=args.seconds_scale, poll_us=args.poll_us,
                force=args.force, run_dir=args.run, perf_metrics=args.perf_metrics)
    t = s["truth"]
    faults = ", ".join(f"{k} {v}" for k, v in t["faults"].items()) or "none"
    if s["truth"] is not None:
        print(f"{s['scenario']}: {t['packets']:,} packets, {t['dropped']:,} dropped, "
              f"{t['victims_total']:,} victims (by fault window: {faults}; unexplained "
              f"{t['unexplained']}), {s['seconds']:.1f} s -> {args.out}")
    from mscope.ovs.view import format_port_view
    print(format_port_view(s["ovs_view"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(s, f, indent=2)
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
        "demo", help="record a real DPDK chain end to end into a capture and summarise it",
        description="Run a small DPDK chain (source -> net_ring -> NAT -> net_null) linked "
                    "with libmscope, with an injected stall; mscope-collect drains its rings "
                    "and ships them over ZeroMQ on loopback to mscope receive, which writes "
                    "a capture; then summarise the capture.",
        epilog="example: mscope demo --seconds 3 --rate 500000")
    p.add_argument("--seconds", type=seconds, default=3.0, help="how long to run (default 3)")
    p.add_argument("--rate", type=non_negative, default=500_000,
                   help="packets per second the source offers (default 500000)")
    p.add_argument("--stall-us", type=non_negative, default=3000.0,
                   help="injected fault: nat stops polling this long (default 3000; 0: none)")
    p.add_argument("--stall-every-ms", type=non_negative, default=500.0,
                   help="how often the stall repeats (default 500)")
    p.add_argument("--keep", metavar="DIR",
                   help="write the capture to DIR and keep it (default: a temporary one)")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "collect", add_help=False,
        help="drain the rings and ship/write chunks (same as mscope-collect; see "
             "mscope collect --help)")
    p.add_argument("collect_args", nargs=argparse.REMAINDER)  # see main()

    p = sub.add_parser(
        "simulate", help="simulate a scenario: a capture plus counterfactual truth.json",
        description="Simulate an NF chain described by a scenario file (docs/simulator.md, "
                    "SCENARIO.md) and write what mscope would have recorded as a capture "
                    "directory, with truth.json: every victim labelled with the faults that "
                    "explain it, by counterfactual runs. Give a directory to run every "
                    "*.json in it (one capture per scenario under --out).",
        epilog="example: mscope simulate bench/scenarios/fw-bug-and-burst.json --out ./sim\n"
               "         mscope simulate bench/scenarios --out ./suite --force",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", nargs="+", help="scenario file(s) or directories of them")
    p.add_argument("--out", required=True, metavar="DIR", help="capture directory to write")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--no-truth", action="store_true",
                   help="skip the counterfactual runs and truth.json")
    p.add_argument("--json", metavar="FILE", help="also write the run summary as JSON")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser(
        "attach", help="run an unmodified, dynamically linked DPDK app with mscope recording it",
        description="Run a DPDK application with libmscope preloaded: every started "
                    "port gets rx and tx callbacks that record into rings for "
                    "mscope-collect (docs/attach.md). --plugin loads it as an EAL "
                    "plugin (-d) instead.",
        epilog="example: mscope attach --nf-name fwd -- dpdk-testpmd --no-pci "
               "--vdev=net_null0 --vdev=net_null1 -- --forward-mode=io")
    p.add_argument("--nf-name", help="NF name in the rings (default: the program's name)")
    p.add_argument("--nf-id", type=int, help="numeric NF id (default: a hash of the name)")
    p.add_argument("--dir", help="ring registry (default $MSCOPE_DIR or /dev/shm/mscope)")
    p.add_argument("--plugin", action="store_true",
                   help="load libmscope with EAL's -d (inserted after the program name, "
                        "where EAL options go) instead of LD_PRELOAD; a thread adds the "
                        "callbacks within ~10 ms of a port's configuration")
    p.add_argument("command_line", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    p.set_defaults(func=_cmd_attach)

    p = sub.add_parser(
        "inspect", help="say whether mscope attach can record a DPDK program, and why",
        description="Read a program's ELF file (pyelftools): executable or shared object,\n"
                    "architecture, stripped or not, whether it links DPDK dynamically and\n"
                    "which DPDK ABI/version, whether rte_eth_dev_start is imported (so\n"
                    "LD_PRELOAD can interpose it) and the librte_ethdev it resolves to\n"
                    "exports rte_eth_add_rx_callback/tx. Ends with 'attach: yes' or\n"
                    "'attach: no — reason; what to do'. Exit status 0: attach can work;\n"
                    "1: it cannot; 2: no such file or not an ELF file (docs/attach.md).",
        epilog="example: mscope inspect /usr/bin/dpdk-testpmd\n"
               "         mscope inspect --json ./build/l2fwd",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("binary", help="the program (or shared object) to inspect")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser(
        "diagnose", help="diagnose a capture: victims, their ranked culprits, patterns",
        description="Find the victims in a capture (latency over --slo-us, or dropped), "
                    "attribute each to ranked culprits (an NF's local slowness, or "
                    "traffic from the source) by queuing periods across NFs, and "
                    "aggregate them into rules (DESIGN.md section 3, SCENARIO.md). "
                    "Source culprits and victims are named by IPv4 source prefix where "
                    "the ingress NF wrote address records (else flows \"*\").",
        epilog="example: mscope diagnose ./sim --slo-us 150 --json diag.json --top 5\n"
               "         mscope diagnose ./live --from 120000 --to 125000   (5 s of it)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("capture", help="capture directory")
    p.add_argument("--slo-us", type=float, default=150.0, metavar="N",
                   help="latency objective in microseconds (default 150)")
    p.add_argument("--json", metavar="OUT", help="write the diagnosis JSON here")
    p.add_argument("--top", type=positive_int, default=5, metavar="K",
                   help="rules and victims to show (default 5)")
    p.add_argument("--pattern-threshold", type=share, default=0.02, metavar="SHARE",
                   help="keep rules that are the top culprit of at least this share of "
                        "the victims, 0 to 1 (default 0.02)")
    p.add_argument("--topology", metavar="FILE",
                   help="the chain's links, to check the inferred topology against (and "
                        "to accept NFs side by side that share no packets; for a chain "
                        "across hosts, the links whose packets align the hosts' clocks): a "
                        "JSON list of [from, to] names, or a scenario file with \"links\"")
    p.add_argument("--peak-rate", type=nf_rate, action="append", metavar="NF=MPPS",
                   help="an NF's peak service rate in Mpps, where you know it better than "
                        "the rate its busiest batches show (the default); repeat for "
                        "several NFs, e.g. --peak-rate nat=3.3")
    p.add_argument("--from", dest="from_ms", type=non_negative, metavar="MS",
                   help="diagnose only the records from MS ms on, counted as the summary "
                        "counts its times (from the capture's first record; from the "
                        "run's start for a simulated capture; on a capture from several "
                        "hosts, in the clock of the first by name): a long capture then "
                        "takes the window's memory, not its own")
    p.add_argument("--to", dest="to_ms", type=positive, metavar="MS",
                   help="... and up to MS ms (default: the end)")
    p.add_argument("--host", action="append", metavar="NAME",
                   help="diagnose only the NFs recorded on this host (repeatable; its "
                        "manifest name, see mscope capture info): for a fleet's capture "
                        "(the same chain on several hosts)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="threads for the parts that run side by side (decoding the "
                        "capture, the NFs' queues); default: one per CPU, at most 4, "
                        "or MSCOPE_THREADS. The diagnosis is the same with any number")
    p.set_defaults(func=_cmd_diagnose)

    p = sub.add_parser(
        "rings", help="list the rings in a registry directory",
        description="List mscope rings: owner, state, records written, bytes not yet "
                    "drained, records dropped.",
        epilog="example: mscope rings /dev/shm/mscope")
    p.add_argument("dir", nargs="?", default=os.environ.get("MSCOPE_DIR", "/dev/shm/mscope"),
                   help="registry directory (default $MSCOPE_DIR or /dev/shm/mscope)")
    p.set_defaults(func=_cmd_rings)

    p = sub.add_parser(
        "capture", help="inspect a capture directory, or index one for windows",
        description="Commands on capture directories.")
    csub = p.add_subparsers(dest="capture_command", metavar="SUBCOMMAND")
    pi = csub.add_parser("info", help="summarise a capture: streams, records, time span, losses",
                         epilog="example: mscope capture info ./cap")
    pi.add_argument("capture", help="capture directory")
    pi.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pi.set_defaults(func=_cmd_capture_info)
    px = csub.add_parser(
        "index", help="write the frame index of a capture written without one",
        description="Write each segment's frame index (chunks-NNNNNN.idx: where in time each "
                    "frame begins) where it is missing or leaves frames out. Writers index "
                    "as they write; a capture from before them, or one whose index files "
                    "were lost, reads whole as well without, but a window of it "
                    "(mscope diagnose --from/--to) must then read every frame's first "
                    "record. Reads each payload once; refused while a writer has the "
                    "capture open.",
        epilog="example: mscope capture index ./cap")
    px.add_argument("capture", help="capture directory")
    px.set_defaults(func=_cmd_capture_index)

    p = sub.add_parser(
        "receive", help="receive chunks from mscope-collect over ZeroMQ into a capture",
        description="Bind a ZeroMQ PULL socket, take the chunks any number of "
                    "mscope-collect processes send to it, check them and append them "
                    "to one capture directory. Binds loopback only unless "
                    "--allow-remote. Run again on the same --out to append. Stops "
                    "cleanly on SIGINT/SIGTERM. See docs/collect.md.",
        epilog="example: mscope receive --listen tcp://127.0.0.1:5555 --out ./cap "
               "--stats 10")
    p.add_argument("--listen", required=True, metavar="ENDPOINT",
                   help="where to bind: tcp://HOST:PORT (PORT * picks a free one) "
                        "or ipc://PATH")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="capture directory: new, empty, or one an earlier receive "
                        "wrote (appended to)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow binding an address other hosts can reach")
    p.add_argument("--curve-secret-key", metavar="FILE",
                   help="this receiver's secret certificate (mscope keygen); "
                        "needs --curve-allow")
    p.add_argument("--curve-allow", metavar="DIR",
                   help="directory of the public certificates (*.key) of the "
                        "collectors to admit; no other client gets in")
    p.add_argument("--stats", type=seconds, default=10.0, metavar="SECONDS",
                   help="seconds between stats lines on stderr (default 10; 0: none)")
    p.add_argument("--rcvhwm", type=positive_int, default=64, metavar="N",
                   help="messages ZeroMQ queues per collector while the receiver "
                        "writes (default 64)")
    p.add_argument("--duration", type=seconds, metavar="SECONDS",
                   help="stop after this long (default: until SIGINT/SIGTERM)")
    p.add_argument("--check-payload", action="store_true",
                   help="decompress every chunk and check it against its header "
                        "(default: crc32 and lengths only)")
    p.add_argument("--topology", metavar="FILE",
                   help="the chain's links, kept in the capture's manifest: what mscope "
                        "diagnose checks the records against, and for a chain across "
                        "hosts the links whose packets align their clocks (a JSON list of "
                        "[from, to] NF names, or a scenario file with \"links\")")
    p.set_defaults(func=_cmd_receive)

    p = sub.add_parser(
        "keygen", help="make a CURVE key pair for mscope receive / mscope-collect",
        description="Write DIR/NAME.key (public certificate, give it to the other "
                    "side) and DIR/NAME.key_secret (secret certificate, mode 0600). "
                    "DIR is created with mode 0700 if missing. Existing keys are "
                    "never overwritten.",
        epilog="example: mscope keygen ~/.mscope/keys receiver")
    p.add_argument("dir", help="directory for the key files")
    p.add_argument("name", help="base name of the key files")
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser(
        "testbed", help="run a scenario on live DPDK NFs: a capture plus window-labelled truth",
        description="Commands of the live DPDK testbed (docs/testbed.md).")
    tsub = p.add_subparsers(dest="testbed_command", metavar="SUBCOMMAND")
    pt = tsub.add_parser(
        "run", help="run a scenario on real DPDK processes and record it",
        description="Realise a scenario (SCENARIO.md) with real processes: a DPDK primary "
                    "(mbuf pool and rte_rings in hugepages), one secondary per NF "
                    "(nat, firewall, monitor, vpn, lb), a source replaying the scenario's "
                    "traffic and a sink, all recorded with libmscope; mscope-collect "
                    "writes the capture to --out; faults are injected at their times; "
                    "truth.json labels the victims by fault window (docs/testbed.md). "
                    "Needs root or hugepages mounted.",
        epilog="example: mscope testbed run chain.json --out ./live --seconds-scale 10\n"
               "         mscope diagnose ./live --slo-us 5000   (objective.latency_us x 10)\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    pt.add_argument("scenario", help="scenario file (SCENARIO.md)")
    pt.add_argument("--out", required=True, metavar="DIR", help="capture directory to write")
    pt.add_argument("--seconds-scale", type=float, default=1.0, metavar="K",
                    help="stretch the scenario's clock K times: times, service_ns and the "
                         "objective x K, rates / K (default 1)")
    pt.add_argument("--poll-us", type=non_negative, default=100.0, metavar="US",
                    help="idle sleep of the source, NFs and sink (default 100)")
    pt.add_argument("--force", action="store_true", help="replace a non-empty --out")
    pt.add_argument("--record-ms", type=positive, metavar="MS",
                    help="stop mscope-collect MS ms (wall clock) after the traffic starts, "
                         "while it still flows, as a recording of a live chain ends (no "
                         "truth.json then: its labels need the whole run)")
    pt.add_argument("--json", metavar="FILE", help="also write the run summary as JSON")
    pt.set_defaults(func=_cmd_testbed)

    p = sub.add_parser(
        "ovs", help="a scenario's chain behind OVS-DPDK (vhost-user), recorded end to end",
        description="Commands of the OVS-DPDK chain (docs/ovs.md): ovsdb-server and "
                    "ovs-vswitchd-dpdk in a private run directory, recorded by the preloaded "
                    "libmscope as NF 'ovs'; the sample NFs on vhost-user ports.")
    osub = p.add_subparsers(dest="ovs_command", metavar="SUBCOMMAND")
    po = osub.add_parser(
        "up", help="bring a chain up behind OVS and leave it running",
        description="Start OVS-DPDK (LD_PRELOAD=libmscope), a netdev bridge with one "
                    "vhost-user port per NF side plus src and snk, one OpenFlow rule per "
                    "link, and the NFs and sink of CHAIN (SCENARIO.md format) in port mode. "
                    "Needs root, 2 CPUs and hugepages (raised to 1024 x 2 MiB if fewer "
                    "are free).",
        epilog="example: mscope ovs up chain.json --run /tmp/ovs1\n"
               "         mscope ovs down --run /tmp/ovs1\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    po.add_argument("chain", help="scenario file (SCENARIO.md): its nfs and links")
    po.add_argument("--run", required=True, metavar="DIR",
                    help="run directory for OVS's files and sockets (short: socket paths "
                         "must fit 107 characters)")
    po.add_argument("--seconds-scale", type=float, default=1.0, metavar="K",
                    help="service_ns x K, as mscope testbed run (default 1)")
    po.add_argument("--poll-us", type=non_negative, default=100.0, metavar="US",
                    help="idle sleep of the NFs and sink (default 100)")
    po.add_argument("--perf-metrics", action="store_true",
                    help="other_config:pmd-perf-metrics=true (ovs-appctl "
                         "dpif-netdev/pmd-perf-show)")
    po.set_defaults(func=_cmd_ovs_up)
    po = osub.add_parser(
        "down", help="stop a chain brought up with mscope ovs up",
        description="Stop every process of the chain in --run (by pid, checked against "
                    "its start time), then remove its sockets, hugepage files, "
                    "/var/run/dpdk prefixes and ring registry.",
        epilog="example: mscope ovs down --run /tmp/ovs1")
    po.add_argument("--run", required=True, metavar="DIR", help="the run directory of up")
    po.set_defaults(func=_cmd_ovs_down)
    po = osub.add_parser(
        "run", help="one scenario through OVS-DPDK: capture plus window-labelled truth",
        description="up, the source replaying the scenario's traffic, its faults (on NFs "
                    "as mscope testbed run; on OVS: \"nf\": \"ovs\" with kind contention "
                    "(a hog on the PMD's core) or interrupt (vswitchd stopped)), "
                    "mscope-collect --out, truth.json (window labels, OVS as a hop), "
                    "ovs-ports.json (recorded port -> OVS port), ovs.json, down.",
        epilog="example: mscope ovs run chain.json --out ./ovscap --seconds-scale 10\n"
               "         mscope diagnose ./ovscap --slo-us 5000\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    po.add_argument("scenario", help="scenario file (SCENARIO.md)")
    po.add_argument("--out", required=True, metavar="DIR", help="capture directory to write")
    po.add_argument("--seconds-scale", type=float, default=1.0, metavar="K",
                    help="stretch the scenario's clock K times (default 1)")
    po.add_argument("--poll-us", type=non_negative, default=100.0, metavar="US",
                    help="idle sleep of the source, NFs and sink (default 100)")
    po.add_argument("--run", metavar="DIR",
                    help="keep OVS's run directory and logs here (default: a temporary one)")
    po.add_argument("--perf-metrics", action="store_true",
                    help="turn on OVS's pmd-perf-metrics; ovs.json gets pmd-perf-show")
    po.add_argument("--force", action="store_true", help="replace a non-empty --out")
    po.add_argument("--json", metavar="FILE", help="also write the run summary as JSON")
    po.set_defaults(func=_cmd_ovs_run)

    p = sub.add_parser(
        "paths", help="where libmscope and its headers are installed",
        description="Print the paths and flags to build an NF against libmscope.",
        epilog="example: gcc nf.c $(pkg-config --cflags --libs libdpdk) "
               "-I$(mscope paths | awk '/^include/{print $2}') ...")
    p.set_defaults(func=_cmd_paths)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "collect":
        # The collector parses its own options (it is also mscope-collect).
        from mscope.collector.daemon import main as collect_main
        return collect_main(argv[1:], prog="mscope collect")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader went (`mscope diagnose CAP | head`): stop quietly, as
        # a tool SIGPIPE ends would, and keep Python's exit flush quiet too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (MscopeError, OSError) as exc:
        print(f"mscope: error: {exc}", file=sys.stderr)
        return 1
    except MemoryError as exc:
        # numpy says how much it could not have: enough to act on
        print(f"mscope: error: out of memory{': ' + str(exc) if str(exc) else ''}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mscope: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
