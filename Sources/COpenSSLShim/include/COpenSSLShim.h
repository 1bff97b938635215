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
/// SSL_CTX_set_min/max_proto_version(DTLS1_2_VERSION) (macros); returns 1 on success.
int ugate_ssl_ctx_set_dtls12(SSL_CTX *ctx);
/// SSL_CTX_set1_groups_list (macro); returns 1 on success.
int ugate_ssl_ctx_set_groups(SSL_CTX *ctx, const char *groups);
/// BIO_set_mem_eof_return (macro): what BIO_read returns on an empty memory BIO.
void ugate_bio_set_mem_eof_return(BIO *bio, int value);
/// SSL_get_read_ahead (macro).
long ugate_ssl_get_read_ahead(SSL *ssl);
/// SSL_CTX_set_read_ahead(ctx, 1) (macro).
int ugate_ssl_ctx_set_read_ahead(SSL_CTX *ctx);

#endif
