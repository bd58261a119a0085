// The io_uring side of the reactor: one ring per event loop, a provided-buffer ring for receives
// (idle connections hold no receive buffer), multishot accept and receive, polls for writability,
// connects and datagram sockets, cancellation. Everything is submitted in one io_uring_enter per
// loop turn (tern_uring_wait). Only the loop thread that created a ring may use it.
#define _GNU_SOURCE
#include "CTernSystem.h"
#include <poll.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/utsname.h>

struct tern_uring {
    struct io_uring ring;
    struct io_uring_buf_ring *br;
    unsigned char *buffers;
    unsigned nbufs, bufsize, mask;
    unsigned pending_recycle;
    size_t br_bytes;
    int deferred;
    int send_zc;
};

static struct io_uring_sqe *sqe_for(struct tern_uring *u) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) {
        io_uring_submit(&u->ring);
        sqe = io_uring_get_sqe(&u->ring);
    }
    return sqe;
}

static int kernel_at_least(int major, int minor) {
    struct utsname un;
    int a = 0, b = 0;
    if (uname(&un) != 0 || sscanf(un.release, "%d.%d", &a, &b) != 2) return 0;
    return a > major || (a == major && b >= minor);
}

tern_uring *tern_uring_create(unsigned entries, unsigned nbufs, unsigned bufsize, int *err, const char **why) {
    *err = 0;
    *why = "";
    if (!kernel_at_least(6, 0)) {
        *err = -ENOSYS;
        *why = "the kernel is older than 6.0 (multishot receive with provided buffers)";
        return NULL;
    }
    struct tern_uring *u = calloc(1, sizeof *u);
    if (!u) { *err = -ENOMEM; *why = "out of memory"; return NULL; }
    // One thread submits and reaps (the loop's): completions' task work runs only when it asks
    // for events (DEFER_TASKRUN, 6.1), never interrupting it or another thread.
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    p.cq_entries = entries * 4;
    int rc = io_uring_queue_init_params(entries, &u->ring, &p);
    if (rc == -EINVAL) {
        memset(&p, 0, sizeof p);
        p.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_CQSIZE;
        p.cq_entries = entries * 4;
        rc = io_uring_queue_init_params(entries, &u->ring, &p);
    }
    if (rc == -EINVAL) {
        memset(&p, 0, sizeof p);
        rc = io_uring_queue_init_params(entries, &u->ring, &p);
    }
    u->deferred = (p.flags & IORING_SETUP_DEFER_TASKRUN) != 0;
    if (rc < 0) {
        *err = rc;
        *why = rc == -EPERM ? "io_uring_setup refused (EPERM: kernel.io_uring_disabled or a seccomp filter)"
             : rc == -ENOSYS ? "io_uring_setup does not exist (ENOSYS)" : "io_uring_setup failed";
        free(u);
        return NULL;
    }
    struct io_uring_probe *probe = io_uring_get_probe_ring(&u->ring);
    int ops[] = { IORING_OP_ACCEPT, IORING_OP_RECV, IORING_OP_POLL_ADD, IORING_OP_ASYNC_CANCEL, IORING_OP_SEND };
    const char *names[] = { "ACCEPT", "RECV", "POLL_ADD", "ASYNC_CANCEL", "SEND" };
    for (unsigned i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (!probe || !io_uring_opcode_supported(probe, ops[i])) {
            static char msg[96];
            snprintf(msg, sizeof msg, "the kernel lacks the io_uring opcode %s", names[i]);
            *err = -EOPNOTSUPP;
            *why = msg;
            if (probe) io_uring_free_probe(probe);
            io_uring_queue_exit(&u->ring);
            free(u);
            return NULL;
        }
    }
    u->send_zc = io_uring_opcode_supported(probe, IORING_OP_SEND_ZC);
    io_uring_free_probe(probe);
    // The provided-buffer ring: page aligned, registered as group 0.
    u->nbufs = nbufs;
    u->bufsize = bufsize;
    u->mask = io_uring_buf_ring_mask(nbufs);
    u->br_bytes = nbufs * sizeof(struct io_uring_buf);
    void *ring_mem = mmap(NULL, u->br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    u->buffers = mmap(NULL, (size_t)nbufs * bufsize, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (ring_mem == MAP_FAILED || u->buffers == MAP_FAILED) {
        *err = -ENOMEM;
        *why = "cannot map the receive buffers";
        io_uring_queue_exit(&u->ring);
        free(u);
        return NULL;
    }
    u->br = ring_mem;
    io_uring_buf_ring_init(u->br);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (unsigned long)u->br;
    reg.ring_entries = nbufs;
    reg.bgid = 0;
    rc = io_uring_register_buf_ring(&u->ring, &reg, 0);
    if (rc < 0) {
        *err = rc;
        *why = "the kernel refused a provided-buffer ring (io_uring_register_buf_ring)";
        munmap(u->br, u->br_bytes);
        munmap(u->buffers, (size_t)nbufs * bufsize);
        io_uring_queue_exit(&u->ring);
        free(u);
        return NULL;
    }
    for (unsigned i = 0; i < nbufs; i++) io_uring_buf_ring_add(u->br, u->buffers + (size_t)i * bufsize, bufsize, i, u->mask, i);
    io_uring_buf_ring_advance(u->br, nbufs);
    return u;
}

void tern_uring_destroy(tern_uring *u) {
    if (!u) return;
    io_uring_queue_exit(&u->ring);
    munmap(u->br, u->br_bytes);
    munmap(u->buffers, (size_t)u->nbufs * u->bufsize);
    free(u);
}

int tern_uring_accept_multishot(tern_uring *u, int fd, uint64_t ud) {
    struct io_uring_sqe *sqe = sqe_for(u);
    if (!sqe) return -EBUSY;
    io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int tern_uring_recv_multishot(tern_uring *u, int fd, uint64_t ud) {
    struct io_uring_sqe *sqe = sqe_for(u);
    if (!sqe) return -EBUSY;
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = 0;
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int tern_uring_poll(tern_uring *u, int fd, unsigned events, int multishot, uint64_t ud) {
    struct io_uring_sqe *sqe = sqe_for(u);
    if (!sqe) return -EBUSY;
    if (multishot) io_uring_prep_poll_multishot(sqe, fd, events);
    else io_uring_prep_poll_add(sqe, fd, events);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int tern_uring_send(tern_uring *u, int fd, const void *buf, unsigned len, int zc, uint64_t ud) {
    struct io_uring_sqe *sqe = sqe_for(u);
    if (!sqe) return -EBUSY;
    if (zc && u->send_zc) io_uring_prep_send_zc(sqe, fd, buf, len, MSG_NOSIGNAL, 0);
    else io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int tern_uring_has_send_zc(tern_uring *u) { return u->send_zc; }

int tern_uring_cancel(tern_uring *u, uint64_t target, uint64_t ud) {
    struct io_uring_sqe *sqe = sqe_for(u);
    if (!sqe) return -EBUSY;
    io_uring_prep_cancel64(sqe, target, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, ud);
    return 0;
}

int tern_uring_wait(tern_uring *u, long long timeout_ns, unsigned wait_nr) {
    if (u->pending_recycle) {
        io_uring_buf_ring_advance(u->br, u->pending_recycle);
        u->pending_recycle = 0;
    }
    struct io_uring_cqe *cqe = NULL;
    int rc;
    if (timeout_ns == 0) {
        rc = u->deferred ? io_uring_submit_and_get_events(&u->ring) : io_uring_submit(&u->ring);
    } else if (timeout_ns < 0) {
        rc = io_uring_submit_and_wait(&u->ring, 1);
    } else {
        struct __kernel_timespec ts = { .tv_sec = timeout_ns / 1000000000LL, .tv_nsec = timeout_ns % 1000000000LL };
        rc = io_uring_submit_and_wait_timeout(&u->ring, &cqe, wait_nr ? wait_nr : 1, &ts, NULL);
    }
    if (rc == -ETIME || rc == -EINTR || rc == -EAGAIN || rc == -EBUSY) return 0;
    return rc < 0 ? rc : 0;
}

unsigned tern_uring_harvest(tern_uring *u, uint64_t *ud, int32_t *res, uint32_t *flags, unsigned n) {
    struct io_uring_cqe *cqes[256];
    if (n > 256) n = 256;
    unsigned got = io_uring_peek_batch_cqe(&u->ring, cqes, n);
    for (unsigned i = 0; i < got; i++) {
        ud[i] = cqes[i]->user_data;
        res[i] = cqes[i]->res;
        flags[i] = cqes[i]->flags;
    }
    io_uring_cq_advance(&u->ring, got);
    return got;
}

void *tern_uring_buffer(tern_uring *u, unsigned bid) {
    return u->buffers + (size_t)bid * u->bufsize;
}

void tern_uring_recycle(tern_uring *u, unsigned bid) {
    io_uring_buf_ring_add(u->br, u->buffers + (size_t)bid * u->bufsize, u->bufsize, bid, u->mask, u->pending_recycle);
    u->pending_recycle++;
    // Give buffers back promptly when many wait (a turn may handle hundreds of receives).
    if (u->pending_recycle >= 32) {
        io_uring_buf_ring_advance(u->br, u->pending_recycle);
        u->pending_recycle = 0;
    }
}
