"""Can `mscope attach` record this program? Look at its ELF file and say.

Attaching (docs/attach.md) preloads libmscope, whose ``rte_eth_dev_start``
the dynamic loader binds the application's call to; libmscope then starts
the port through the real function and installs ethdev rx/tx callbacks with
``rte_eth_add_rx_callback``/``rte_eth_add_tx_callback``. That works when

* the program is dynamically linked (the loader runs, LD_PRELOAD counts);
* ``rte_eth_dev_start`` is *imported* (undefined in the program and provided
  by a shared librte_ethdev), not defined inside it as a static DPDK build
  does: calls inside one object never go through the loader;
* the librte_ethdev that provides it exports both callback entry points;
* that librte_ethdev has the DPDK ABI libmscope was built against (two
  ethdev libraries in one process do not work).

:func:`inspect_binary` answers these with pyelftools, following the
program's DT_NEEDED libraries the way ld.so finds them (RPATH,
LD_LIBRARY_PATH, RUNPATH, the ldconfig cache, the standard directories),
and returns plain data; :func:`format_report` prints it for people.
"""
import os
import platform
import re
import subprocess
from collections import deque

from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError
from elftools.elf.elffile import ELFFile

from mscope.errors import BinaryFormatError

__all__ = ["inspect_binary", "format_report", "dpdk_release_for_abi"]

START = "rte_eth_dev_start"
CALLBACKS = ("rte_eth_add_rx_callback", "rte_eth_add_tx_callback")
RECORDER_ADVICE = "link the recorder API instead (docs/recorder.md)"

_DPDK_SONAME = re.compile(r"^librte_([A-Za-z0-9_]+)\.so\.(\d+)(?:\.(\d+))?")
_DPDK_VERSION_TEXT = re.compile(rb"DPDK (\d{2})\.(\d{2})\.(\d+)((?:-rc\d+)?)")
_STATIC_EAL_TEXT = b"Detected static linkage of DPDK"   # rte_eal's own log line

_ARCH = {"EM_X86_64": "x86-64", "EM_AARCH64": "aarch64", "EM_386": "i386",
         "EM_ARM": "arm", "EM_PPC64": "ppc64", "EM_RISCV": "riscv",
         "EM_LOONGARCH": "loongarch", "EM_S390": "s390x"}
_TRIPLET = {"x86-64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu",
            "i386": "i386-linux-gnu", "ppc64": "powerpc64le-linux-gnu",
            "riscv": "riscv64-linux-gnu", "arm": "arm-linux-gnueabihf"}
_HOST_ARCH = {"x86_64": "x86-64", "amd64": "x86-64", "aarch64": "aarch64",
              "arm64": "aarch64"}
_MAX_OBJECTS = 400          # dependency walk bound (testpmd loads ~120)


def dpdk_release_for_abi(abi, minor=None):
    """The DPDK release an ABI number stands for: since 19.11 the ABI major
    changes once a year with the LTS release (19.11 -> 20, 22.11 -> 23), and
    the releases until the next LTS keep it, bumping the minor."""
    if abi is None or abi < 20:
        return None
    if not minor:
        return f"{abi - 1}.11"
    return f"{abi}.xx (after {abi - 1}.11)"


class _Object:
    """What inspect needs from one ELF file; the file is closed afterwards."""

    def __init__(self, path, main=False):
        self.path = path
        self.name = os.path.basename(path)
        try:
            with open(path, "rb") as f:
                self._read(ELFFile(f), main)
        except (ELFError, ConstructError, ValueError, KeyError, IndexError,
                AssertionError) as exc:
            raise BinaryFormatError(f"{path}: not a readable ELF file ({exc})") from None

    def _read(self, elf, main):
        h = elf.header
        self.e_type = h.e_type
        self.machine = h.e_machine
        self.arch = _ARCH.get(h.e_machine, str(h.e_machine))
        self.bits = elf.elfclass
        self.little = elf.little_endian
        self.interp = None
        self.dynamic = False
        self.needed, self.rpath, self.runpath = [], [], []
        self.soname, self.flags_1 = None, 0
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_INTERP":
                self.interp = seg.get_interp_name()
            elif seg["p_type"] == "PT_DYNAMIC":
                self.dynamic = True
        dyn = elf.get_section_by_name(".dynamic")
        if dyn is None:             # section headers stripped: use the segment
            dyn = next((s for s in elf.iter_segments() if s["p_type"] == "PT_DYNAMIC"), None)
        if dyn is not None:
            for tag in dyn.iter_tags():
                t = tag.entry.d_tag
                if t == "DT_NEEDED":
                    self.needed.append(tag.needed)
                elif t == "DT_RPATH":
                    self.rpath += tag.rpath.split(":")
                elif t == "DT_RUNPATH":
                    self.runpath += tag.runpath.split(":")
                elif t == "DT_SONAME":
                    self.soname = tag.soname
                elif t == "DT_FLAGS_1":
                    self.flags_1 = tag.entry.d_val
        self.stripped = elf.get_section_by_name(".symtab") is None
        self.debug_info = elf.get_section_by_name(".debug_info") is not None
        self._hash = elf.get_section_by_name(".gnu.hash") or elf.get_section_by_name(".hash")
        # Only the program itself is read in full; libraries answer lookups.
        self.imports, self.defines, self.version_of = set(), {}, {}
        self.verneed = {}
        self.rodata = b""
        self.version_fn = {}
        # A library that is not DPDK's own but needs it may be where the
        # program calls rte_eth_dev_start: read its imports too.
        if main or (self.needs_dpdk() and not _DPDK_SONAME.match(self.soname or "")):
            self._read_symbols(elf)
        if main:
            ro = elf.get_section_by_name(".rodata")
            self.rodata = ro.data() if ro is not None and ro["sh_type"] != "SHT_NOBITS" else b""
            self.version_fn = self._version_functions(elf)
        self._lookups = {n: self._lookup(n) for n in (START, *CALLBACKS)}
        self.callback_size = {n: (self._lookups[n] or {}).get("size") for n in CALLBACKS}

    def needs_dpdk(self):
        return any(_DPDK_SONAME.match(n) for n in self.needed)

    def _read_symbols(self, elf):
        versions = {}
        vr = elf.get_section_by_name(".gnu.version_r")
        if vr is not None:
            for vn, auxs in vr.iter_versions():
                for aux in auxs:
                    versions[aux["vna_other"]] = (vn.name, aux.name)
                    self.verneed.setdefault(vn.name, []).append(aux.name)
        vs = elf.get_section_by_name(".gnu.version")
        for name in (".dynsym", ".symtab"):
            tab = elf.get_section_by_name(name)
            if tab is None or tab["sh_type"] == "SHT_NOBITS":
                continue
            for i, sym in enumerate(tab.iter_symbols()):
                if not sym.name or sym["st_info"]["type"] not in ("STT_FUNC", "STT_NOTYPE",
                                                                    "STT_GNU_IFUNC"):
                    continue
                if sym["st_shndx"] == "SHN_UNDEF":
                    if name == ".dynsym":
                        self.imports.add(sym.name)
                        if vs is not None:
                            ndx = vs.get_symbol(i)["ndx"]
                            if isinstance(ndx, int) and ndx in versions:
                                self.version_of[sym.name] = versions[ndx]
                elif sym["st_info"]["bind"] != "STB_LOCAL" or sym.name.startswith("rte_"):
                    self.defines.setdefault(sym.name, (sym["st_value"], sym["st_size"],
                                                       name == ".dynsym"))

    def _lookup(self, name):
        """The symbol ``name`` as this object defines it, or None."""
        if name in self.defines:
            value, size, exported = self.defines[name]
            return {"value": value, "size": size, "exported": exported}
        if self._hash is None:
            return None
        try:
            sym = self._hash.get_symbol(name)
        except (ELFError, ValueError, KeyError, IndexError):
            return None
        if sym is None or sym["st_shndx"] == "SHN_UNDEF":
            return None
        return {"value": sym["st_value"], "size": sym["st_size"], "exported": True}

    def exports(self, name):
        found = self._lookups.get(name) if name in self._lookups else self._lookup(name)
        return found is not None and found["exported"]

    def defines_symbol(self, name):
        return (self._lookups.get(name) if name in self._lookups
                else self._lookup(name)) is not None

    def _version_functions(self, elf):
        """DPDK >= 20.11 builds its version string at run time ("%s %d.%02d.%d"),
        but rte_version_year/month/minor() each return a constant: read the
        constants out of their two-instruction bodies."""
        want = ("rte_version_year", "rte_version_month", "rte_version_minor")
        out = {}
        for name in want:
            found = self._lookup(name)
            if found is None:
                return {}
            code = _read_vaddr(elf, found["value"], 8)
            value = _decode_return_constant(code, self.arch, self.little)
            if value is None:
                return {}
            out[name] = value
        return out


def _read_vaddr(elf, addr, size):
    for seg in elf.iter_segments():
        if seg["p_type"] != "PT_LOAD":
            continue
        start = seg["p_vaddr"]
        if start <= addr and addr + size <= start + seg["p_filesz"]:
            elf.stream.seek(seg["p_offset"] + addr - start)
            return elf.stream.read(size)
    return b""


def _decode_return_constant(code, arch, little):
    """The constant a ``return N;`` function body returns, or None."""
    if arch == "x86-64" and len(code) >= 6 and code[0] == 0xB8 and code[5] == 0xC3:
        return int.from_bytes(code[1:5], "little")          # mov $imm32,%eax; ret
    if arch == "aarch64" and len(code) >= 8 and little:
        mov, ret = int.from_bytes(code[:4], "little"), int.from_bytes(code[4:8], "little")
        if mov & 0xFFE0001F == 0x52800000 and ret == 0xD65F03C0:
            return (mov >> 5) & 0xFFFF                     # mov w0,#imm16; ret
    return None


class _Resolver:
    """Find a DT_NEEDED name as ld.so would, for objects of one architecture."""

    def __init__(self, main):
        self.main = main
        self.origin = os.path.dirname(os.path.realpath(main.path))
        self._cache = None
        triplet = _TRIPLET.get(main.arch)
        lib = "lib64" if main.bits == 64 else "lib32"
        self.default_dirs = [d for d in (
            triplet and f"/lib/{triplet}", triplet and f"/usr/lib/{triplet}",
            f"/{lib}", f"/usr/{lib}", "/lib", "/usr/lib",
            triplet and f"/usr/local/lib/{triplet}", "/usr/local/lib") if d]

    def _expand(self, dirs, obj):
        origin = os.path.dirname(os.path.realpath(obj.path))
        return [d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)
                for d in dirs if d]

    def _ldconfig(self):
        if self._cache is None:
            self._cache = {}
            for exe in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
                try:
                    out = subprocess.run([exe, "-p"], capture_output=True, text=True,
                                         timeout=10).stdout
                    break
                except (OSError, subprocess.SubprocessError):
                    out = ""
            for line in out.splitlines():
                m = re.match(r"\s+(\S+) \(([^)]*)\) => (\S+)", line)
                if m:
                    self._cache.setdefault(m.group(1), []).append(m.group(3))
        return self._cache

    def resolve(self, name, requester):
        """(path, _Object) for ``name`` needed by ``requester``, or (None, None)."""
        if "/" in name:
            candidates = [name]
        else:
            dirs = []
            if not requester.runpath:
                dirs += self._expand(requester.rpath, requester)
                if requester is not self.main and not self.main.runpath:
                    dirs += self._expand(self.main.rpath, self.main)
            dirs += [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
            dirs += self._expand(requester.runpath, requester)
            candidates = [os.path.join(d, name) for d in dirs]
            candidates += self._ldconfig().get(name, [])
            candidates += [os.path.join(d, name) for d in self.default_dirs]
        for path in candidates:
            if not os.path.isfile(path):
                continue
            try:
                obj = _Object(path)
            except (BinaryFormatError, OSError):
                continue
            if obj.machine == self.main.machine and obj.bits == self.main.bits:
                return path, obj
        return None, None


def _describe_kind(obj):
    if obj.e_type == "ET_EXEC":
        return "executable"
    if obj.e_type == "ET_DYN":
        if obj.flags_1 & 0x08000000 or obj.interp:     # DF_1_PIE
            return "pie executable"
        return "shared object"
    return {"ET_REL": "relocatable object", "ET_CORE": "core file"}.get(
        obj.e_type, str(obj.e_type))


def _soname_abi(name):
    m = _DPDK_SONAME.match(name or "")
    return (int(m.group(2)), int(m.group(3)) if m.group(3) else None) if m else (None, None)


def _libmscope_abi(path):
    """(ethdev ABI, arch) libmscope was linked against, or (None, None)."""
    try:
        obj = _Object(str(path))
    except (BinaryFormatError, OSError):
        return None, None
    for n in obj.needed:
        if n.startswith("librte_ethdev.so."):
            return _soname_abi(n)[0], obj.arch
    return None, obj.arch


def inspect_binary(path, libmscope=None):
    """Inspect the ELF file ``path``; return a plain-data dict (JSON-ready).

    ``result["attach"]`` is True when ``mscope attach`` can record the
    program; otherwise ``reason`` says why and ``advice`` what to do.
    ``libmscope`` (default: the installed one) is checked for the same
    DPDK ABI. Raises :class:`~mscope.errors.BinaryFormatError` for a file
    that is not ELF and OSError for one that cannot be opened.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise BinaryFormatError(f"{path}: is a directory, not an ELF file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"\x7fELF":
        raise BinaryFormatError(f"{path}: not an ELF file")
    main = _Object(path, main=True)
    notes = []

    # The libraries the loader would map, breadth first as it does.
    resolver = _Resolver(main)
    objects, missing = [], []
    seen = set()
    queue = deque((n, main) for n in main.needed)
    while queue and len(objects) < _MAX_OBJECTS:
        name, requester = queue.popleft()
        if name in seen:
            continue
        seen.add(name)
        _, obj = resolver.resolve(name, requester)
        if obj is None:
            missing.append(name)
            continue
        obj.name = name
        objects.append(obj)
        queue.extend((n, obj) for n in obj.needed if n not in seen)

    direct_dpdk = [n for n in main.needed if _DPDK_SONAME.match(n)]
    all_dpdk = sorted({o.name for o in objects if _DPDK_SONAME.match(o.name)}
                      | {n for n in missing if _DPDK_SONAME.match(n)})

    # rte_eth_dev_start: defined inside, imported, or not used at all.
    start_inside = main.defines_symbol(START)
    static_eal = _STATIC_EAL_TEXT in main.rodata and not any(
        n.startswith("librte_eal.so.") for n in all_dpdk)
    importers = [main.path] if START in main.imports else []
    importers += [o.path for o in objects
                  if START in o.imports and not _DPDK_SONAME.match(o.name)]
    provider = next((o for o in objects if o.defines_symbol(START)), None)
    if start_inside:
        start_status = "defined"
    elif importers:
        start_status = "imported"
    elif static_eal:
        start_status = "unknown"        # DPDK is inside, its symbols are not
    else:
        start_status = "absent"
    start_version = main.version_of.get(START)

    if _DPDK_SONAME.match(main.soname or ""):
        dpdk_linkage = "dynamic"        # one of DPDK's shared libraries itself
    elif start_inside or static_eal:
        dpdk_linkage = "static"
    elif all_dpdk:
        dpdk_linkage = "dynamic"
    else:
        dpdk_linkage = "none"

    # ABI: from the ethdev (else eal, else any) soname, and symbol versions.
    abi, abi_minor, ethdev = None, None, None
    for prefix in ("librte_ethdev.so.", "librte_eal.so.", "librte_"):
        name = next((n for n in all_dpdk if n.startswith(prefix)), None)
        if name:
            abi = _soname_abi(name)[0]
            if prefix == "librte_ethdev.so.":
                ethdev = name
            break
    if provider is not None and _DPDK_SONAME.match(provider.name):
        ethdev = provider.name
        abi = _soname_abi(provider.name)[0]
    abi_from = next((o for o in objects if o.name == ethdev), None) or next(
        (o for o in objects if o.name.startswith("librte_eal.so.")), None)
    if abi_from is not None:
        real = os.path.basename(os.path.realpath(abi_from.path))
        file_abi, abi_minor = _soname_abi(real)
        if file_abi != abi:
            abi_minor = None
    abis = sorted({_soname_abi(n)[0] for n in all_dpdk} - {None})
    if len(abis) > 1:
        notes.append(f"librte_* libraries of several ABIs are needed ({abis}): "
                     "the program mixes DPDK installations")
    symbol_versions = sorted({v for n, vs in main.verneed.items() if _DPDK_SONAME.match(n)
                              for v in vs})

    # The version number: a literal in .rodata, else rte_version_*() bodies.
    version, version_from = None, None
    eal = next((o for o in objects if o.name.startswith("librte_eal.so.")), None)
    sources = [(main, main.rodata, main.version_fn)]
    if eal is not None:
        sources.append((eal, None, None))
    for obj, rodata, fns in sources:
        if rodata is None:
            try:
                full = _Object(obj.path, main=True)
            except (BinaryFormatError, OSError):
                continue
            rodata, fns = full.rodata, full.version_fn
        m = _DPDK_VERSION_TEXT.search(rodata)
        if m:
            version = f"{m.group(1).decode()}.{m.group(2).decode()}.{int(m.group(3))}" \
                      f"{m.group(4).decode()}"
            version_from = f'"DPDK {version}" in .rodata of {obj.path}'
            break
        if fns:
            version = (f"{fns['rte_version_year']}.{fns['rte_version_month']:02d}."
                       f"{fns['rte_version_minor']}")
            version_from = f"rte_version_year/month/minor() in {obj.path}"
            break
    if abi is None and version:      # static builds: the ABI the version implies
        year, month = (int(x) for x in version.split(".")[:2])
        abi = year + 1 if month == 11 else year
    release = dpdk_release_for_abi(abi, abi_minor)
    if release is None and version:
        release = ".".join(version.split(".")[:2])

    # The callback entry points, where the ethdev in use provides them.
    cb_lib = main if start_inside else provider
    callbacks = {n: (cb_lib.exports(n) or (cb_lib is main and cb_lib.defines_symbol(n)))
                 if cb_lib is not None else None for n in CALLBACKS}
    if cb_lib is not None:
        small = [n for n in CALLBACKS
                 if cb_lib.callback_size.get(n) and cb_lib.callback_size[n] < 40]
        if small:
            notes.append(f"{', '.join(small)} in {cb_lib.path} is only "
                         f"{cb_lib.callback_size[small[0]]} bytes: DPDK may be built without "
                         "RTE_ETHDEV_RXTX_CALLBACKS (the callbacks would return ENOTSUP)")

    # libmscope's own DPDK ABI must match the program's.
    if libmscope is None:
        from mscope import paths
        libmscope = paths.libmscope()
    ms_abi, ms_arch = _libmscope_abi(libmscope)
    if ms_arch is None:
        notes.append(f"libmscope not found at {libmscope}: reinstall mscope to attach")
    elif ms_arch != main.arch:
        notes.append(f"libmscope here is built for {ms_arch}; attach on the {main.arch} "
                     "machine with mscope built there")
    host = _HOST_ARCH.get(platform.machine().lower())
    if host and host != main.arch and (ms_arch is None or ms_arch == main.arch):
        notes.append(f"this machine is {host}, the program is {main.arch}")

    # The verdict: the first thing that stops attaching, with what to do.
    kind = _describe_kind(main)
    reason = advice = None
    ethdev_name = provider.name if provider is not None else (ethdev or "librte_ethdev")
    if main.e_type not in ("ET_EXEC", "ET_DYN"):
        reason = f"{path} is a {kind}, not a program or shared library"
        advice = "inspect the linked executable"
    elif _DPDK_SONAME.match(main.soname or ""):
        reason = f"{main.soname} is one of DPDK's own libraries"
        advice = "inspect the application that uses it"
    elif start_inside or static_eal:
        how = ("rte_eth_dev_start is defined inside the binary" if start_inside else
               "DPDK's EAL is inside the binary")
        reason = (f"DPDK is linked statically ({how}), so LD_PRELOAD cannot interpose "
                  "rte_eth_dev_start")
        advice = (f"{RECORDER_ADVICE}, or rebuild it against the shared DPDK libraries "
                  "(pkg-config --libs libdpdk, without --static)")
    elif not main.dynamic:
        reason = "statically linked executable: the dynamic loader never runs, so " \
                 "LD_PRELOAD is ignored"
        advice = f"{RECORDER_ADVICE}, or link it dynamically"
    elif dpdk_linkage == "none":
        reason = "it does not use DPDK ethdev (no librte_* libraries, no rte_eth_dev_start)"
        advice = "mscope attach records DPDK applications only"
    elif start_status == "absent" and kind == "shared object":
        reason = "this shared object links DPDK but never calls rte_eth_dev_start"
        advice = "inspect the program that loads it"
    elif start_status == "absent":
        linked = ", ".join((direct_dpdk or all_dpdk)[:3])
        reason = (f"it links DPDK ({linked}{', ...' if len(direct_dpdk or all_dpdk) > 3 else ''})"
                  " but never calls rte_eth_dev_start: no ethdev ports to put callbacks on")
        advice = "record it with the recorder API where it moves packets (docs/recorder.md)"
    elif provider is None:
        reason = (f"{ethdev_name} (which provides rte_eth_dev_start) was not found on this "
                  "machine, so its callbacks cannot be checked")
        advice = ("install DPDK's runtime libraries or set LD_LIBRARY_PATH, then inspect "
                  "again")
    elif not all(callbacks.values()):
        lacking = ", ".join(n for n in CALLBACKS if not callbacks[n])
        reason = f"{provider.path} does not export {lacking}"
        advice = (f"use a DPDK build with ethdev rx/tx callbacks "
                  f"(RTE_ETHDEV_RXTX_CALLBACKS), or {RECORDER_ADVICE}")
    elif ms_abi is not None and ms_arch == main.arch and abi is not None and ms_abi != abi:
        reason = (f"libmscope was built against DPDK ABI {ms_abi}, the program uses ABI {abi} "
                  f"({ethdev_name}); two ethdev libraries cannot share a process")
        advice = "rebuild mscope against the program's DPDK (install.sh with its pkg-config)"

    attach = reason is None
    verdict = "attach: yes" if attach else f"attach: no — {reason}; {advice}"
    return {
        "path": path,
        "elf": {"kind": kind, "type": main.e_type, "arch": main.arch, "bits": main.bits,
                "endian": "little" if main.little else "big",
                "linkage": "dynamic" if main.dynamic else "static",
                "interpreter": main.interp, "soname": main.soname,
                "stripped": main.stripped, "debug_info": main.debug_info},
        "needed": list(main.needed),
        "missing": missing,
        "dpdk": {"linkage": dpdk_linkage, "libraries": direct_dpdk,
                 "indirect": [n for n in all_dpdk if n not in direct_dpdk],
                 "abi": abi, "abi_minor": abi_minor, "release": release,
                 "version": version, "version_from": version_from,
                 "symbol_versions": symbol_versions},
        "rte_eth_dev_start": {"status": start_status, "imported_by": importers,
                              "provider": provider.path if provider is not None else None,
                              "provider_soname": provider.name if provider is not None else None,
                              "version": f"{start_version[1]} ({start_version[0]})"
                              if start_version else None},
        "callbacks": {"library": cb_lib.path if cb_lib is not None else None, **callbacks},
        "libmscope": {"path": str(libmscope), "abi": ms_abi, "arch": ms_arch},
        "attach": attach,
        "reason": reason,
        "advice": advice,
        "notes": notes,
        "verdict": verdict,
    }


def format_report(r):
    """The human-readable report; the verdict is the last line."""
    e, d, s, cb = r["elf"], r["dpdk"], r["rte_eth_dev_start"], r["callbacks"]
    file_line = (f"ELF {e['bits']}-bit {e['kind']}, {e['arch']}, {e['linkage']}ally linked, "
                 f"{'stripped' if e['stripped'] else 'not stripped'}"
                 f"{', with debug info' if e['debug_info'] else ''}")
    if d["linkage"] == "none":
        dpdk_line = "not used"
    else:
        dpdk_line = f"linked {d['linkage']}ally"
        if d["libraries"]:
            n = len(d["libraries"])
            dpdk_line += f" ({n} librte_* librar{'y' if n == 1 else 'ies'} needed"
            dpdk_line += f", {len(d['indirect'])} more through them)" if d["indirect"] else ")"
        if d["abi"] is not None:
            dpdk_line += f"; ABI {d['abi']}"
            if d["release"]:
                dpdk_line += f" (DPDK {d['release']})"
        if d["version"]:
            dpdk_line += f"; version {d['version']} from {d['version_from']}"
    start_line = s["status"]
    if s["status"] == "imported":
        by = ", ".join(s["imported_by"])
        start_line += f" by {by}"
        if s["version"]:
            start_line += f" as {s['version']}"
        start_line += (f", provided by {s['provider']}" if s["provider"]
                       else ", provider not found")
    elif s["status"] == "defined":
        start_line += " inside the binary"
    if cb["library"] is None:
        cb_line = "-"
    else:
        cb_line = "; ".join(f"{n} {'exported' if cb[n] else 'MISSING'}"
                            for n in CALLBACKS) + f" ({cb['library']})"
    lines = [r["path"],
             f"  file               {file_line}",
             f"  DPDK               {dpdk_line}",
             f"  rte_eth_dev_start  {start_line}",
             f"  callbacks          {cb_line}"]
    if r["missing"]:
        lines.append(f"  not found          {', '.join(r['missing'])}")
    lines += [f"  note               {n}" for n in r["notes"]]
    lines.append(r["verdict"])
    return "\n".join(lines)
