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


/// A BIO on the non-blocking socket `fd` (never closed by it) that first serves `length` bytes
/// of `prefix` (copied: bytes read before TLS started). Reads `recv`, writes `send` with
/// MSG_NOSIGNAL; EAGAIN sets the retry flags (SSL_ERROR_WANT_READ / WANT_WRITE). NULL on failure.
BIO *ugate_socket_bio_new(int fd, const unsigned char *prefix, size_t length);
/// The errno of that BIO's last failed recv or send (0 if none).
int ugate_socket_bio_errno(BIO *bio);
/// An HTTP/1.1 server context: TLS 1.2 minimum, partial writes with moving buffers, no
/// renegotiation, read-ahead, ALPN answering `http/1.1` when offered (else no ALPN). 1: done.
int ugate_ssl_ctx_configure_http1_server(SSL_CTX *ctx);
/// Whether an error-queue entry is OpenSSL 3's "unexpected eof while reading" (the peer closed
/// the TCP connection without a close_notify).
int ugate_err_is_unexpected_eof(unsigned long error);

#endif
