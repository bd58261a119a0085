#define _GNU_SOURCE 1
#include <pthread.h>
#include <sys/prctl.h>
#include "CTernSystem.h"

int tern_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = token;
    return epoll_ctl(epfd, op, fd, &ev);
}

int tern_epoll_wait(int epfd, uint64_t *tokens, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        tokens[i] = evs[i].data.u64;
        events[i] = evs[i].events;
    }
    return n;
}

int tern_accept(int fd) {
    return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

static int fill_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof *a4;
        return AF_INET;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof *a6;
        return AF_INET6;
    }
    return -1;
}

int tern_listen_tcp(const char *host, int port, int reuseport, int backlog) {
    struct sockaddr_storage ss;
    socklen_t len;
    int family = fill_addr(host, port, &ss, &len);
    if (family < 0) return -EINVAL;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, backlog) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int tern_local_port(int fd) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -errno;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -EAFNOSUPPORT;
}

/* A non-blocking socket of `type` connecting to a numeric address: the fd (with *in_progress set
   when a stream connect is still under way), or -errno. A datagram socket's connect() picks a
   random ephemeral source port and makes the kernel drop datagrams from anyone else. */
static int connect_socket(const char *host, int port, int type, int *in_progress) {
    struct sockaddr_storage ss;
    socklen_t len;
    int family = fill_addr(host, port, &ss, &len);
    if (family < 0) return -EINVAL;
    int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (type == SOCK_STREAM) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    *in_progress = 0;
    if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
        if (errno == EINPROGRESS && type == SOCK_STREAM) {
            *in_progress = 1;
        } else {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    return fd;
}

int tern_connect_tcp(const char *host, int port, int *in_progress) {
    return connect_socket(host, port, SOCK_STREAM, in_progress);
}

int tern_connect_udp(const char *host, int port) {
    int in_progress;
    return connect_socket(host, port, SOCK_DGRAM, &in_progress);
}

int tern_socket_error(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return -errno;
    return err;
}

int tern_set_nodelay(int fd) {
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

uint64_t tern_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t tern_thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int tern_signalfd(const int *signals, int count) {
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < count; i++) sigaddset(&set, signals[i]);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) return -EINVAL;
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int tern_signalfd_read(int fd) {
    struct signalfd_siginfo si;
    ssize_t n = read(fd, &si, sizeof si);
    if (n == (ssize_t)sizeof si) return (int)si.ssi_signo;
    if (n < 0 && errno == EAGAIN) return 0;
    return n < 0 ? -errno : 0;
}

int tern_peer_address(int fd, char *buf, int len) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) return -errno;
    const void *src = ss.ss_family == AF_INET ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
                                              : (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
    if (!inet_ntop(ss.ss_family, src, buf, (socklen_t)len)) return -errno;
    return 0;
}

int tern_punch_hole(int fd, off_t offset, off_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0 ? 0 : -errno;
}

ssize_t tern_copy_range(int from, int to, size_t length) {
    return copy_file_range(from, NULL, to, NULL, length, 0);
}

ssize_t tern_copy_range_at(int from, int64_t *from_offset, int to, int64_t *to_offset, size_t length) {
    loff_t a = *from_offset, b = *to_offset;
    ssize_t n = copy_file_range(from, &a, to, &b, length, 0);
    *from_offset = a;
    *to_offset = b;
    return n;
}

int tern_open_unnamed(const char *directory) {
    int fd = open(directory, O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
    return fd >= 0 ? fd : -errno;
}

int tern_mkstemp_cloexec(char *template_path) {
    int fd = mkostemp(template_path, O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

int tern_set_thread_name(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0) == 0 ? 0 : -errno;
}

int tern_syncfs(int fd) {
    return syncfs(fd) == 0 ? 0 : -errno;
}

int tern_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno;
}

#if defined(__x86_64__)
#include <nmmintrin.h>

int tern_crc32c_hw_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
}

__attribute__((target("sse4.2")))
uint32_t tern_crc32c_hw(uint32_t crc, const void *data, size_t length) {
    const unsigned char *p = data;
    uint64_t c = crc;
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = _mm_crc32_u64(c, word);
        p += 8;
        length -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (length > 0) {
        c32 = _mm_crc32_u8(c32, *p++);
        length--;
    }
    return c32;
}
#else
int tern_crc32c_hw_available(void) { return 0; }
uint32_t tern_crc32c_hw(uint32_t crc, const void *data, size_t length) { (void)data; (void)length; return crc; }
#endif

#include <malloc.h>
size_t tern_heap_in_use(void) {
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

size_t tern_relaxed_plain_prefix(const uint8_t *p, size_t n) {
    size_t i = 0;
#if defined(__SSE2__)
    const __m128i k31 = _mm_set1_epi8(31), k32 = _mm_set1_epi8(32);
    while (i + 17 <= n) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
        __m128i next = _mm_loadu_si128((const __m128i *)(p + i + 1));
        /* unsigned v <= 31: a control character; v == 32 with the next byte <= 32. */
        __m128i ctl = _mm_cmpeq_epi8(_mm_max_epu8(v, k31), k31);
        __m128i sp = _mm_cmpeq_epi8(v, k32);
        __m128i blank_next = _mm_cmpeq_epi8(_mm_max_epu8(next, k32), k32);
        if (_mm_movemask_epi8(_mm_or_si128(ctl, _mm_and_si128(sp, blank_next))) != 0) break;
        i += 16;
    }
#else
    (void)p;
    (void)n;
#endif
    return i;
}

int tern_tls_configure(SSL_CTX *ctx, int server) {
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) return 0;
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF
                                 | (server ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    /* TLS 1.2: forward-secret AEAD suites only; TLS 1.3 keeps its (all AEAD) defaults. */
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1:!RC4:!3DES") != 1) return 0;
    return 1;
}

int tern_tls_set_max_version(SSL_CTX *ctx, int version) {
    if (version != 0 && version < TLS1_2_VERSION) {
        /* An old client, for tests of the server's refusal: lift the floor and the security level. */
        SSL_CTX_set_security_level(ctx, 0);
        if (SSL_CTX_set_cipher_list(ctx, "DEFAULT@SECLEVEL=0") != 1) return 0;
        if (SSL_CTX_set_min_proto_version(ctx, version) != 1) return 0;
    }
    return SSL_CTX_set_max_proto_version(ctx, version);
}

size_t tern_bio_pending(BIO *bio) {
    return BIO_ctrl_pending(bio);
}

long tern_bio_mem_data(BIO *bio, char **data) {
    return BIO_get_mem_data(bio, data);
}

void tern_bio_reset(BIO *bio) {
    (void)BIO_reset(bio);
}

int tern_tls_set_server_name(SSL *ssl, const char *name) {
    if (SSL_set_tlsext_host_name(ssl, name) != 1) return 0;
    return SSL_set1_host(ssl, name);
}

typedef struct {
    int count;
    SSL_CTX **contexts;
} tern_sni_table;

static int tern_sni_callback(SSL *ssl, int *alert, void *arg) {
    (void)alert;
    const tern_sni_table *t = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL) return SSL_TLSEXT_ERR_OK;
    for (int i = 0; i < t->count; i++) {
        X509 *cert = SSL_CTX_get0_certificate(t->contexts[i]);
        if (cert != NULL && X509_check_host(cert, name, 0, 0, NULL) == 1) {
            if (t->contexts[i] != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, t->contexts[i]);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK; /* the default certificate */
}

int tern_tls_set_sni(SSL_CTX *default_ctx, SSL_CTX *const *contexts, int count) {
    tern_sni_table *t = malloc(sizeof *t);
    if (t == NULL) return 0;
    t->contexts = malloc(sizeof(SSL_CTX *) * (size_t)(count > 0 ? count : 1));
    if (t->contexts == NULL) {
        free(t);
        return 0;
    }
    t->count = count;
    for (int i = 0; i < count; i++) {
        SSL_CTX_up_ref(contexts[i]);
        t->contexts[i] = contexts[i];
    }
    SSL_CTX_set_tlsext_servername_callback(default_ctx, tern_sni_callback);
    SSL_CTX_set_tlsext_servername_arg(default_ctx, t);
    return 1;
}

int tern_join_within(pthread_t thread, double seconds) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    long long ns = (long long)until.tv_nsec + (long long)((seconds - (double)(long long)seconds) * 1e9);
    until.tv_sec += (time_t)seconds + (time_t)(ns / 1000000000LL);
    until.tv_nsec = (long)(ns % 1000000000LL);
    return pthread_timedjoin_np(thread, NULL, &until);
}
