#!/usr/bin/env python3
"""Write the .npy seed corpus of fuzz_npy (corpus/npy/) without NumPy: the header bytes by hand.

Valid files for each tensor fuzz_npy.c loads into, and one file per way a .npy can be wrong.
Run from anywhere: python3 tests/fuzz/make_npy_seeds.py
"""
import os
import struct

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "npy")


def npy(descr, shape, data, fortran=False, version=(1, 0), dict_text=None):
    shape_text = "(" + "".join("%d, " % s for s in shape).rstrip(" ")
    if len(shape) > 1:
        shape_text = shape_text.rstrip(",")
    shape_text += ")"
    d = dict_text if dict_text is not None else "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (
        descr, "True" if fortran else "False", shape_text)
    pre = 10 if version[0] == 1 else 12
    n = (pre + len(d) + 1 + 63) // 64 * 64
    h = d + " " * (n - pre - len(d) - 1) + "\n"
    size = struct.pack("<H", len(h)) if version[0] == 1 else struct.pack("<I", len(h))
    return b"\x93NUMPY" + bytes(version) + size + h.encode("latin-1") + data


def f32(*v):
    return struct.pack("<%df" % len(v), *v)


seeds = {
    "ok_f32_2x3.npy": npy("<f4", (2, 3), f32(1, -2, 0.5, 3e38, -0.0, 1e-40)),
    "ok_u2_2x3_v2.npy": npy("<u2", (2, 3), struct.pack("<6H", 0x3F80, 0xBF80, 0x7F80, 0xFFC1, 0, 1),
                            version=(2, 0)),
    "ok_V2_2x3_v3.npy": npy("|V2", (2, 3), bytes(range(12)), version=(3, 0)),
    "ok_f2_6.npy": npy("<f2", (6,), struct.pack("<6H", 0x3C00, 0x7C00, 0xFC00, 0x7E00, 1, 0x8000)),
    "ok_f32_6_to_f16.npy": npy("<f4", (6,), f32(65504, 65520, 1e-8, -1, 0.1, float("nan"))),
    "ok_u1_3x1.npy": npy("|u1", (3, 1), b"\x00\x7f\xff"),
    "ok_f32_3x1_to_fp8.npy": npy("<f4", (3, 1), f32(448, 500, -1e-9)),
    "ok_u1_5.npy": npy("|u1", (5,), b"\x00\x7f\x80\xfe\xff"),
    "ok_i4_4.npy": npy("<i4", (4,), struct.pack("<4i", -1, 0, 2**31 - 1, -2**31)),
    "ok_i8_2x2.npy": npy("<i8", (2, 2), struct.pack("<4q", -1, 0, 2**63 - 1, -2**63)),
    "ok_f8_scalar.npy": npy("<f8", (), struct.pack("<d", 3.5)),
    "ok_u1_1x0.npy": npy("|u1", (1, 0), b""),
    "ok_fortran_1d.npy": npy("<i4", (4,), struct.pack("<4i", 1, 2, 3, 4), fortran=True),
    "bad_magic.npy": b"not a numpy file",
    "bad_empty.npy": b"",
    "bad_version.npy": npy("<f4", (2, 3), f32(*range(6)), version=(4, 0)),
    "bad_truncated_header.npy": npy("<f4", (2, 3), b"")[:30],
    "bad_truncated_data.npy": npy("<f4", (2, 3), f32(*range(5))),
    "bad_extra_data.npy": npy("<f4", (2, 3), f32(*range(7))),
    "bad_big_endian.npy": npy(">f4", (2, 3), struct.pack(">6f", *range(6))),
    "bad_fortran_2d.npy": npy("<f4", (2, 3), f32(*range(6)), fortran=True),
    "bad_shape.npy": npy("<f4", (3, 2), f32(*range(6))),
    "bad_descr.npy": npy("<c8", (2, 3), bytes(48)),
    "bad_huge_shape.npy": npy("<f4", (2**62, 2**62), b""),
    "bad_struct_descr.npy": npy("", (), b"", dict_text="{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (), }"),
    "bad_nul_in_header.npy": npy("", (), b"", dict_text="{'descr': '<f4'\x00, 'fortran_order': False, 'shape': (2, 3), }"),
    "bad_trailing_text.npy": npy("", (), f32(*range(6)),
                                 dict_text="{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } x"),
    "bad_header_len.npy": b"\x93NUMPY\x02\x00\xff\xff\xff\xff{",
}

os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print("wrote %d seeds to %s" % (len(seeds), out))
