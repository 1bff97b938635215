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
