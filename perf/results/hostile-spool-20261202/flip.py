import sys
# flip.py FILE OFFSET [BITMASK]
f, off = sys.argv[1], int(sys.argv[2], 0)
mask = int(sys.argv[3], 0) if len(sys.argv) > 3 else 0x01
with open(f, 'r+b') as fh:
    fh.seek(off); b = fh.read(1); fh.seek(off); fh.write(bytes([b[0] ^ mask]))
print(f"flipped {f}@{off} mask {mask:#x}")
