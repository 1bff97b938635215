#include "COpenSSLShim.h"
#include <sys/time.h>

long ugate_dtls_handle_timeout(SSL *ssl) {
    return DTLSv1_handle_timeout(ssl);
}

long ugate_dtls_get_timeout(SSL *ssl, long *seconds, long *microseconds) {
    struct timeval tv = {0, 0};
    long running = DTLSv1_get_timeout(ssl, &tv);
    *seconds = (long)tv.tv_sec;
    *microseconds = (long)tv.tv_usec;
    return running;
}

long ugate_ssl_set_mtu(SSL *ssl, long mtu) {
    return SSL_set_mtu(ssl, mtu);
}

void ugate_ssl_disable_mtu_query(SSL *ssl) {
    SSL_set_options(ssl, SSL_OP_NO_QUERY_MTU);
}

int ugate_ssl_ctx_set_dtls12(SSL_CTX *ctx) {
    if (SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION) != 1) return 0;
    return (int)SSL_CTX_set_max_proto_version(ctx, DTLS1_2_VERSION);
}

int ugate_ssl_ctx_set_groups(SSL_CTX *ctx, const char *groups) {
    return (int)SSL_CTX_set1_groups_list(ctx, groups);
}

void ugate_bio_set_mem_eof_return(BIO *bio, int value) {
    BIO_set_mem_eof_return(bio, value);
}

long ugate_ssl_get_read_ahead(SSL *ssl) {
    return SSL_get_read_ahead(ssl);
}

int ugate_ssl_ctx_set_read_ahead(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_read_ahead(ctx, 1);
}

/* ---- TLS on a non-blocking socket (the HTTPRoute gateway's HTTP/1.1 over TLS) ---- */

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <openssl/err.h>

/* The state of a prefix-then-socket BIO: bytes read from the socket before TLS started (the
 * ClientHello, read to look at its SNI and ALPN), served first; then the socket itself. */
typedef struct {
    int fd;
    unsigned char *prefix;
    size_t length;
    size_t offset;
    int last_errno;
} ugate_socket_bio_state;

/* A recv or send that returned `n`: the count, or -1 with errno kept and, for EAGAIN, the
 * retry flag of the direction set (SSL_ERROR_WANT_READ / WANT_WRITE). */
static int ugate_socket_bio_result(BIO *bio, ugate_socket_bio_state *state, ssize_t n, int writing) {
    if (n >= 0) return (int)n;
    state->last_errno = errno;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (writing) {
            BIO_set_retry_write(bio);
        } else {
            BIO_set_retry_read(bio);
        }
    }
    return -1;
}

static int ugate_socket_bio_read(BIO *bio, char *out, int length) {
    ugate_socket_bio_state *state = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (length <= 0) return 0;
    if (state->prefix != NULL) {
        size_t left = state->length - state->offset;
        size_t n = left < (size_t)length ? left : (size_t)length;
        memcpy(out, state->prefix + state->offset, n);
        state->offset += n;
        if (state->offset == state->length) {
            free(state->prefix);
            state->prefix = NULL;
        }
        return (int)n;
    }
    ssize_t n;
    do {
        n = recv(state->fd, out, (size_t)length, 0);
    } while (n < 0 && errno == EINTR);
    return ugate_socket_bio_result(bio, state, n, 0);
}

static int ugate_socket_bio_write(BIO *bio, const char *in, int length) {
    ugate_socket_bio_state *state = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (length <= 0) return 0;
    ssize_t n;
    do {
        n = send(state->fd, in, (size_t)length, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return ugate_socket_bio_result(bio, state, n, 1);
}

static long ugate_socket_bio_ctrl(BIO *bio, int command, long number, void *pointer) {
    (void)bio;
    (void)number;
    (void)pointer;
    switch (command) {
    case BIO_CTRL_FLUSH:
        return 1;
    default:
        return 0;
    }
}

static int ugate_socket_bio_destroy(BIO *bio) {
    ugate_socket_bio_state *state = BIO_get_data(bio);
    if (state != NULL) {
        free(state->prefix);
        free(state);
        BIO_set_data(bio, NULL);
    }
    return 1;
}

static BIO_METHOD *ugate_socket_bio_method_value;
static pthread_once_t ugate_socket_bio_once = PTHREAD_ONCE_INIT;

static void ugate_socket_bio_method_init(void) {
    BIO_METHOD *method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ugate socket");
    if (method == NULL) return;
    BIO_meth_set_read(method, ugate_socket_bio_read);
    BIO_meth_set_write(method, ugate_socket_bio_write);
    BIO_meth_set_ctrl(method, ugate_socket_bio_ctrl);
    BIO_meth_set_destroy(method, ugate_socket_bio_destroy);
    ugate_socket_bio_method_value = method;
}

BIO *ugate_socket_bio_new(int fd, const unsigned char *prefix, size_t length) {
    pthread_once(&ugate_socket_bio_once, ugate_socket_bio_method_init);
    if (ugate_socket_bio_method_value == NULL) return NULL;
    ugate_socket_bio_state *state = calloc(1, sizeof(*state));
    if (state == NULL) return NULL;
    state->fd = fd;
    if (length > 0) {
        state->prefix = malloc(length);
        if (state->prefix == NULL) {
            free(state);
            return NULL;
        }
        memcpy(state->prefix, prefix, length);
        state->length = length;
    }
    BIO *bio = BIO_new(ugate_socket_bio_method_value);
    if (bio == NULL) {
        free(state->prefix);
        free(state);
        return NULL;
    }
    BIO_set_data(bio, state);
    BIO_set_init(bio, 1);
    return bio;
}

int ugate_socket_bio_errno(BIO *bio) {
    ugate_socket_bio_state *state = bio == NULL ? NULL : BIO_get_data(bio);
    return state == NULL ? 0 : state->last_errno;
}

static int ugate_alpn_select_http11(SSL *ssl, const unsigned char **out, unsigned char *out_length,
                                    const unsigned char *in, unsigned int in_length, void *arg) {
    static const unsigned char http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    (void)ssl;
    (void)arg;
    unsigned char *selected = NULL;
    if (SSL_select_next_proto(&selected, out_length, http11, sizeof(http11), in, in_length) != OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

int ugate_ssl_ctx_configure_http1_server(SSL_CTX *ctx) {
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) return 0;
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_alpn_select_cb(ctx, ugate_alpn_select_http11, NULL);
    return 1;
}

int ugate_err_is_unexpected_eof(unsigned long error) {
    return ERR_GET_LIB(error) == ERR_LIB_SSL && ERR_GET_REASON(error) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
}
