// What a TLS key process costs (issue 17: "ideally in a separate key process that signs
// handshakes for smtp, as OpenSMTPD's `ca` does; if that costs more than 25% of the
// new-STARTTLS-sessions rate, keep the keys in smtp"). Full TLS handshakes (no tickets, no session
// cache) between a client and a server in this process over memory BIOs, one after another on one
// thread, as one smtp loop does them:
//
//   local   the server holds its private key (what ternd's smtp process does today)
//   remote  the server holds only the public half; each signature is a blocking round trip over a
//           socketpair to a forked key process that holds the private key (OpenSMTPD's ca design:
//           an RSA_METHOD whose private encryption, an EC_KEY_METHOD whose signing, is a request)
//
//   cc -O2 -Wno-deprecated-declarations perf/tools/keyproc-handshakes.c -o keyproc -lssl -lcrypto
//   ./keyproc CERT KEY SECONDS MODE        MODE: local | remote; prints handshakes/s
//
// perf/compare-keyproc.sh runs both modes in turn, several rounds, for an RSA-2048 and a P-256
// certificate, and reports the medians and their ratio.
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int keyfd = -1;
/// Signatures asked of the key process (to show the remote path is the one taken).
static long asked = 0;
/// Time spent in the server's handshake calls: the server's own rate, without the client's work.
static double serverTime = 0;

static int full(int fd, void *p, size_t n, int writing) {
    size_t at = 0;
    while (at < n) {
        ssize_t r = writing ? write(fd, (char *)p + at, n - at) : read(fd, (char *)p + at, n - at);
        if (r <= 0) return -1;
        at += (size_t)r;
    }
    return 0;
}

// A request: kind (1 RSA private encrypt with padding, 2 ECDSA sign of a digest), the padding,
// the input; the answer: length (or -1) and bytes.
static int ask(uint32_t kind, uint32_t padding, const unsigned char *in, uint32_t len, unsigned char *out, uint32_t cap) {
    asked++;
    uint32_t h[3] = {kind, padding, len};
    if (full(keyfd, h, sizeof h, 1) || full(keyfd, (void *)in, len, 1)) return -1;
    int32_t n;
    if (full(keyfd, &n, sizeof n, 0) || n < 0 || (uint32_t)n > cap) return -1;
    if (full(keyfd, out, (size_t)n, 0)) return -1;
    return n;
}

static int remote_priv_enc(int flen, const unsigned char *from, unsigned char *to, RSA *rsa, int padding) {
    return ask(1, (uint32_t)padding, from, (uint32_t)flen, to, (uint32_t)RSA_size(rsa));
}

static int remote_ec_sign(int type, const unsigned char *dgst, int dlen, unsigned char *sig, unsigned int *siglen, const BIGNUM *kinv, const BIGNUM *r, EC_KEY *eckey) {
    (void)type; (void)kinv; (void)r;
    int n = ask(2, 0, dgst, (uint32_t)dlen, sig, (uint32_t)ECDSA_size(eckey));
    if (n < 0) return 0;
    *siglen = (unsigned)n;
    return 1;
}

// The key process: answers requests with the real key until its socket closes.
static void serve_key(int fd, EVP_PKEY *key) {
    unsigned char in[1024], out[1024];
    for (;;) {
        uint32_t h[3];
        if (full(fd, h, sizeof h, 0) || h[2] > sizeof in || full(fd, in, h[2], 0)) _exit(0);
        int32_t n = -1;
        if (h[0] == 1) {
            n = RSA_private_encrypt((int)h[2], in, out, (RSA *)EVP_PKEY_get0_RSA(key), (int)h[1]);
        } else if (h[0] == 2) {
            unsigned int len = sizeof out;
            n = ECDSA_sign(0, in, (int)h[2], out, &len, (EC_KEY *)EVP_PKEY_get0_EC_KEY(key)) == 1 ? (int32_t)len : -1;
        }
        if (full(fd, &n, sizeof n, 1) || (n > 0 && full(fd, out, (size_t)n, 1))) _exit(0);
    }
}

// The public half of `key` with methods that ask the key process.
static EVP_PKEY *remote_key(EVP_PKEY *key) {
    EVP_PKEY *p = EVP_PKEY_new();
    if (EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA) {
        RSA_METHOD *m = RSA_meth_dup(RSA_get_default_method());
        RSA_meth_set_priv_enc(m, remote_priv_enc);
        RSA *pub = RSAPublicKey_dup(EVP_PKEY_get0_RSA(key));
        RSA_set_method(pub, m);
        EVP_PKEY_assign_RSA(p, pub);
    } else {
        EC_KEY_METHOD *m = EC_KEY_METHOD_new(EC_KEY_get_default_method());
        int (*sign)(int, const unsigned char *, int, unsigned char *, unsigned int *, const BIGNUM *, const BIGNUM *, EC_KEY *) = NULL;
        int (*setup)(EC_KEY *, BN_CTX *, BIGNUM **, BIGNUM **) = NULL;
        ECDSA_SIG *(*sig)(const unsigned char *, int, const BIGNUM *, const BIGNUM *, EC_KEY *) = NULL;
        EC_KEY_METHOD_get_sign(m, &sign, &setup, &sig);
        EC_KEY_METHOD_set_sign(m, remote_ec_sign, setup, sig);
        EC_KEY *pub = EC_KEY_new();
        EC_KEY_set_group(pub, EC_KEY_get0_group(EVP_PKEY_get0_EC_KEY(key)));
        EC_KEY_set_public_key(pub, EC_KEY_get0_public_key(EVP_PKEY_get0_EC_KEY(key)));
        EC_KEY_set_method(pub, m);
        EVP_PKEY_assign_EC_KEY(p, pub);
    }
    return p;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double now(void);

static int handshake(SSL_CTX *sctx, SSL_CTX *cctx) {
    SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
    BIO *sb, *cb;
    BIO_new_bio_pair(&sb, 0, &cb, 0);
    SSL_set_bio(s, sb, sb);
    SSL_set_bio(c, cb, cb);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    int done = 0, ok = 0;
    for (int i = 0; i < 100 && !done; i++) {
        int rc = SSL_do_handshake(c);
        double t0 = now();
        int rs = SSL_do_handshake(s);
        serverTime += now() - t0;
        if (rc == 1 && rs == 1) done = ok = 1;
        else if ((rc <= 0 && SSL_get_error(c, rc) != SSL_ERROR_WANT_READ) || (rs <= 0 && SSL_get_error(s, rs) != SSL_ERROR_WANT_READ)) done = 1;
    }
    SSL_free(s);
    SSL_free(c);
    return ok;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s CERT KEY SECONDS local|remote\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[2], "r");
    EVP_PKEY *key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (!key) { fprintf(stderr, "cannot read %s\n", argv[2]); return 1; }
    fclose(f);
    int remote = strcmp(argv[4], "remote") == 0;
    EVP_PKEY *use = key;
    pid_t child = 0;
    if (remote) {
        int sv[2];
        socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
        child = fork();
        if (child == 0) {
            close(sv[0]);
            serve_key(sv[1], key);
        }
        close(sv[1]);
        keyfd = sv[0];
        use = remote_key(key);
    }
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method()), *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_options(sctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_use_certificate_chain_file(sctx, argv[1]) != 1 || SSL_CTX_use_PrivateKey(sctx, use) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    double seconds = atof(argv[3]), start = now();
    long n = 0, failed = 0;
    while (now() - start < seconds) {
        if (handshake(sctx, cctx)) n++; else failed++;
    }
    double took = now() - start;
    printf("%s %.0f handshakes/s, server side %.0f/s (%ld in %.2f s, %ld failed, %ld signatures by the key process)\n", argv[4], n / took, n / serverTime, n, took, failed, asked);
    if (child) { close(keyfd); waitpid(child, NULL, 0); }
    return failed > 0;
}
