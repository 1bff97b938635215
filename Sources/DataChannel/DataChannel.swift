/// DTLS (OpenSSL) + SCTP (usrsctp) + DCEP + SDP. See docs/datachannel.md.
public enum DataChannelModule {}
