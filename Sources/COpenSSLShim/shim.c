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
