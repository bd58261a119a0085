import sys; sys.path.insert(0,sys.path[0]); from h import *
MiB=1<<20
def hdr_of(total):
    # build header section of exactly `total` bytes, NOT counting the empty line
    start=b'X-Fold: s\r\n'
    unit=b'\t'+b'f'*76+b'\r\n'  # 79 bytes
    n=(total-len(start))//len(unit)
    h=start+unit*n
    rem=total-len(h)
    if rem>0:
        assert rem>=4
        h+=b'\t'+b'g'*(rem-3)+b'\r\n'
    assert len(h)==total,(len(h),total)
    return h
for total in [int(a) for a in sys.argv[1:]] or [MiB-100, MiB-2, MiB-1, MiB, MiB+1, MiB+2, MiB+100, 2*MiB]:
    h=hdr_of(total); m=h+b'\r\nbody\r\n'
    r=sendmsg(m)
    res=check(m,r) if code(r)==250 else ''
    print(total, total-MiB, r, res)
# header only (no empty line) > 1MiB
h=hdr_of(MiB+1000); r=sendmsg(h); print('noempty', r)
# header with bare body start, trailing headers 
