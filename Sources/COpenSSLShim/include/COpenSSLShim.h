#ifndef UGATE_COPENSSLSHIM_H
#define UGATE_COPENSSLSHIM_H
#include <openssl/ssl.h>

/// DTLSv1_handle_timeout is a macro over SSL_ctrl.
long ugate_dtls_handle_timeout(SSL *ssl);
/// DTLSv1_get_timeout is a macro; returns 1 and fills the timeval when a timer is running.
long ugate_dtls_get_timeout(SSL *ssl, long *seconds, long *microseconds);
/// SSL_set_mtu is a macro over SSL_ctrl.
long ugate_ssl_set_mtu(SSL *ssl, long mtu);
/// SSL_set_options with SSL_OP_NO_QUERY_MTU, so the MTU set above is used as is.
void ugate_ssl_disable_mtu_query(SSL *ssl);

#endif
