import sys; sys.path.insert(0,'/var/tmp/h2'); from smtp import C
def msg(total, mid, hdrsize=0):
    h='Message-ID: <%s>\r\nSubject: s\r\n'%mid
    if hdrsize: 
        # many header lines
        line='X-Pad: '+'a'*90+'\r\n'
        h+=line*(hdrsize//len(line)+1)
    h+='\r\n'
    body_len=total-len(h)
    lines=[]; rem=body_len
    while rem>0:
        l=min(rem,998+2)
        if l<2: lines[-1]=lines[-1][:-2]+'b'*rem+'\r\n'; break   # unlikely
        lines.append('b'*(l-2)+'\r\n'); rem-=l
    return h+''.join(lines)
def send(total, mid, hdr=0, bdat=False):
    c=C(13525); c.reply(); ehlo=c.cmd('EHLO t'); size=[l for l in ehlo if 'SIZE' in l]
    print(mid, size, c.cmd('MAIL FROM:<a@example.org>')[0], c.cmd('RCPT TO:<bob@example.org>')[0])
    m=msg(total, mid, hdr).encode(); print(' len', len(m))
    if bdat:
        c.send(b'BDAT %d LAST\r\n'%len(m)+m); print(' ', c.reply())
    else:
        r=c.cmd('DATA'); c.send(m+b'.\r\n'); print(' ', c.reply())
    print(' ', c.cmd('QUIT'))
send(2097152, 'exact-size')
send(2097153, 'size-plus-1')
send(2097152, 'exact-size-bdat', bdat=True)
send(2097153, 'size-plus1-bdat', bdat=True)
send(1200000, 'big-header', hdr=1100000)
send(1048000, 'header-1M-minus', hdr=1046000)
