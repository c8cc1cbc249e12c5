"""Read the target architecture out of a cubin (a CUDA ELF), with no CUDA toolkit.

How it is encoded (checked against `cuobjdump -elf`, shipped with Triton, on cubins that
ptxas 12.9/13 built for sm_80, sm_90, sm_90a, sm_100, sm_100a, sm_100f and sm_120):

- `e_ident[EI_OSABI]` is 0x33 (51) or 0x41 (65, "CUDA" in newer toolkits) and `e_machine` is
  190 (EM_CUDA).
- `e_flags` holds the SM number: for ELF ABI version >= 8 (`e_ident[EI_ABIVERSION]`, CUDA 12.8+)
  in bits 8..15 (sm_90 -> 0x5a00, sm_100 -> 0x6400); before that in bits 0..7 (EF_CUDA_SM).
- The arch-specific "a" suffix (sm_90a, sm_100a) is not in e_flags: it is attribute 0x09 of the
  `.nv.compat` section, whose records are `fmt(u8) attr(u8)` followed by a u8 value and a pad
  byte (fmt 2), a u16 value (fmt 3) or a u16 size and that many bytes (fmt 4). It reads 1 for
  "a" cubins and 0 otherwise. `.note.nv.tkinfo` also carries the ptxas command line
  ("-arch sm_90a"), which `tkinfo_arch` reads as a cross-check.
"""

from __future__ import annotations

import re
import struct

EM_CUDA = 190
_COMPAT_ARCH_SPECIFIC = 0x09


def elf_sections(data: bytes) -> dict[str, bytes]:
    """Section name -> contents of a 64-bit little-endian ELF file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    sections = {}
    for name_off, kind, _flags, _addr, offset, size, *_ in headers:
        start = names_at + name_off
        name = data[start : data.index(b"\0", start)].decode()
        sections[name] = b"" if kind == 8 else data[offset : offset + size]  # 8: SHT_NOBITS
    return sections


def sm_number(data: bytes) -> int:
    """The SM number (90, 100, ...) from the ELF header."""
    (machine,) = struct.unpack_from("<H", data, 0x12)
    if machine != EM_CUDA:
        raise ValueError(f"ELF machine {machine} is not EM_CUDA ({EM_CUDA})")
    abi_version = data[8]
    (flags,) = struct.unpack_from("<I", data, 0x30)
    return (flags >> 8) & 0xFF if abi_version >= 8 else flags & 0xFF


def compat_attributes(section: bytes) -> dict[int, int | bytes]:
    """Parse `.nv.compat` records into attr -> value."""
    attrs: dict[int, int | bytes] = {}
    pos = 0
    while pos + 2 <= len(section):
        fmt, attr = section[pos], section[pos + 1]
        if fmt == 2:  # one-byte value, one pad byte
            attrs[attr] = section[pos + 2]
            pos += 4
        elif fmt == 3:  # two-byte value
            (attrs[attr],) = struct.unpack_from("<H", section, pos + 2)
            pos += 4
        elif fmt == 4:  # sized blob
            (size,) = struct.unpack_from("<H", section, pos + 2)
            attrs[attr] = section[pos + 4 : pos + 4 + size]
            pos += 4 + size
        else:  # fmt 1: no value
            pos += 4
    return attrs


def cubin_arch(data: bytes) -> str:
    """The cubin's arch as ptxas names it: "sm_90a", "sm_100a", "sm_90", ..."""
    sm = sm_number(data)
    compat = compat_attributes(elf_sections(data).get(".nv.compat", b""))
    suffix = "a" if compat.get(_COMPAT_ARCH_SPECIFIC) == 1 else ""
    return f"sm_{sm}{suffix}"


def tkinfo_arch(data: bytes) -> str | None:
    """The -arch ptxas was given, from the `.note.nv.tkinfo` note (None if absent)."""
    note = elf_sections(data).get(".note.nv.tkinfo", b"")
    match = re.search(rb"-arch\s+(sm_\w+)", note)
    return match.group(1).decode() if match else None
