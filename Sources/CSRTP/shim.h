#ifndef UGATE_CSRTP_SHIM_H
#define UGATE_CSRTP_SHIM_H
#include <string.h>
#include <srtp2/srtp.h>

/// Creates an SRTP/SRTCP context for one direction with key sharing over all SSRCs.
/// `profile` 1 = SRTP_AES128_CM_SHA1_80, 7 = SRTP_AEAD_AES_128_GCM (RFC 5764 / RFC 7714 ids);
/// `key_and_salt` is the master key followed by the master salt. Returns srtp_err_status_t.
static inline int ugate_srtp_create(srtp_t *session, int profile, const unsigned char *key_and_salt, int outbound) {
    srtp_policy_t policy;
    memset(&policy, 0, sizeof(policy));
    if (profile == 7) {
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtcp);
    } else if (profile == 1) {
        srtp_crypto_policy_set_rtp_default(&policy.rtp);
        srtp_crypto_policy_set_rtcp_default(&policy.rtcp);
    } else {
        return srtp_err_status_bad_param;
    }
    policy.ssrc.type = outbound ? ssrc_any_outbound : ssrc_any_inbound;
    policy.key = (unsigned char *)key_and_salt;
    policy.window_size = 1024;
    policy.allow_repeat_tx = 1;
    return srtp_create(session, &policy);
}

enum { UGATE_SRTP_MAX_TRAILER_LEN = SRTP_MAX_TRAILER_LEN };

#endif
