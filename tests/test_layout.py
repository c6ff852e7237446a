"""src/mscope/record.py mirrors csrc/mscope_record.h: hold it to the compiler."""
import subprocess

from conftest import TESTS_C
from mscope import record


def test_python_layout_matches_c_header(cbuild):
    exe = cbuild("layout_probe", [TESTS_C / "layout_probe.c"])
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True,
                         timeout=30).stdout.split("\n")
    fields, consts = {}, {}
    for line in filter(None, out):
        words = line.split()
        if words[0] == "const":
            consts[words[1]] = int(words[2])
        else:
            fields[words[1]] = (int(words[2]), int(words[3]))
    dt = record.RING_RECORD_DTYPE
    assert set(fields) == set(dt.names)
    for name, (offset, size) in fields.items():
        assert dt.fields[name][1] == offset, name
        assert dt.fields[name][0].itemsize == size, name
    assert consts["REC_HDR_SIZEOF"] == dt.itemsize
    # Every record flag is probed, so none can drift unnoticed.
    assert {"MSCOPE_REC_F_TX", "MSCOPE_REC_F_ADDR", "MSCOPE_REC_F_NOIDS",
            "MSCOPE_REC_F_REFUSED", "MSCOPE_REC_F_PAD"} <= set(consts)
    # And the Python side has no flag the header lacks.
    assert {n for n in dir(record) if n.startswith("REC_F_")} == {
        c[len("MSCOPE_"):] for c in consts if c.startswith("MSCOPE_REC_F_")}
    for c_name, value in consts.items():
        if c_name.startswith("MSCOPE_"):
            py_name = c_name[len("MSCOPE_"):]
            assert getattr(record, py_name) == value, c_name


def test_record_docstring_examples():
    import doctest
    assert doctest.testmod(record).failed == 0
