import sys, struct
# records.py SEGFILE : lists records (offset, length, type, id, state)
b = open(sys.argv[1], 'rb').read()
pos = 0
names = {1:'message',2:'status',3:'end',4:'start',5:'padding'}
while pos + 32 <= len(b):
    if b[pos:pos+4] == b'TRN2':
        ln, ty = struct.unpack_from('<IB', b, pos+4)
        rid, = struct.unpack_from('<Q', b, pos+12)
        st, = struct.unpack_from('<I', b, pos+24)
        print(pos, ln, names.get(ty, ty), '%016X' % rid, 'dead' if st == 0xffffffff else ('live' if st == 0 else hex(st)))
        pos += max(8, (ln + 7) & ~7)
    else:
        pos += 8
