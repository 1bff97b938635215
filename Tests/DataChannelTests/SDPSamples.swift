/// Sample descriptions in the form each foreign stack produces (see INTEROP.md "SDP details").
enum SDPSamples {
    static let fp256 = "sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08"
    static let fp384 = "sha-384 A0:E4:EE:9A:C3:7E:4A:B4:9C:CC:0B:43:1A:5C:3E:2B:10:B1:69:40:77:8F:45:3B:B6:CE:AB:2F:E8:A8:A6:A9:43:65:9F:80:5F:95:1D:C3:C3:FA:0B:3A:C7:3F:9C:02"
    static let fp512 = "sha-512 C8:07:0C:42:9C:2F:2A:5E:4D:20:15:0B:84:F4:11:F3:9E:6C:7B:1B:94:D8:AD:A6:1B:05:D4:4D:A7:54:0E:74:3B:1F:B3:4F:8E:3A:2C:60:37:D5:7C:1C:4E:A9:F4:52:D8:5D:5B:BD:A0:53:AE:70:FA:30:E0:9B:18:03:D6:FB"

    /// Chromium: BUNDLE, extmap-allow-mixed, msid-semantic, udp + tcp (active, port 9) candidates,
    /// ice-options:trickle, max-message-size 262144.
    static let chromiumOffer = """
    v=0\r
    o=- 4611731400430051336 2 IN IP4 127.0.0.1\r
    s=-\r
    t=0 0\r
    a=group:BUNDLE 0\r
    a=extmap-allow-mixed\r
    a=msid-semantic: WMS\r
    m=application 46243 UDP/DTLS/SCTP webrtc-datachannel\r
    c=IN IP4 127.0.0.1\r
    a=candidate:1467250027 1 udp 2122260223 127.0.0.1 46243 typ host generation 0 network-id 1\r
    a=candidate:1467250027 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active generation 0 network-id 1\r
    a=ice-ufrag:Fh3A\r
    a=ice-pwd:p9QhgUw8bU5dXE1Ihr0Q7yl0\r
    a=ice-options:trickle\r
    a=fingerprint:\(fp256)\r
    a=setup:actpass\r
    a=mid:0\r
    a=sctp-port:5000\r
    a=max-message-size:262144\r

    """

    /// aiortc: 4-char ufrag, three fingerprints, candidates inline, end-of-candidates.
    static let aiortcOffer = """
    v=0\r
    o=- 3941250311 3941250311 IN IP4 0.0.0.0\r
    s=-\r
    t=0 0\r
    a=group:BUNDLE 0\r
    a=msid-semantic:WMS *\r
    m=application 40563 UDP/DTLS/SCTP webrtc-datachannel\r
    c=IN IP4 127.0.0.1\r
    a=mid:0\r
    a=sctp-port:5000\r
    a=max-message-size:262144\r
    a=candidate:a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6 1 udp 2130706431 127.0.0.1 40563 typ host\r
    a=end-of-candidates\r
    a=ice-ufrag:x7Qe\r
    a=ice-pwd:Ysv0rIa9bBb8XnYo4cWbGqQf\r
    a=fingerprint:\(fp256)\r
    a=fingerprint:\(fp384)\r
    a=fingerprint:\(fp512)\r
    a=setup:actpass\r

    """

    /// pion: fingerprint at session level, candidates for components 1 and 2, no max-message-size.
    static let pionOffer = """
    v=0\r
    o=- 8360271386286593011 1732550000 IN IP4 0.0.0.0\r
    s=-\r
    t=0 0\r
    a=fingerprint:\(fp256)\r
    a=extmap-allow-mixed\r
    a=group:BUNDLE 0\r
    m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r
    c=IN IP4 0.0.0.0\r
    a=setup:actpass\r
    a=mid:0\r
    a=sendrecv\r
    a=sctp-port:5000\r
    a=ice-ufrag:uVQhJxWnQwMgRZCz\r
    a=ice-pwd:hJDnVFpQtjqOwBqOxWNYaqaJmbXYuHTf\r
    a=candidate:2837134963 1 udp 2130706431 127.0.0.1 51024 typ host\r
    a=candidate:2837134963 2 udp 2130706431 127.0.0.1 51024 typ host\r
    a=end-of-candidates\r

    """

    /// libdatachannel: setup, ICE credentials and fingerprint at session level, LF line ends,
    /// trickle (no candidates yet).
    static let libdatachannelOffer = """
    v=0
    o=rtc 2890844526 0 IN IP4 127.0.0.1
    s=-
    t=0 0
    a=group:BUNDLE 0
    a=group:LS 0
    a=msid-semantic:WMS *
    a=setup:actpass
    a=ice-ufrag:7Yk2
    a=ice-pwd:H4dZ4mA2dWx8Ai9c2LZqz6
    a=ice-options:ice2,trickle
    a=fingerprint:\(fp256)
    m=application 9 UDP/DTLS/SCTP webrtc-datachannel
    c=IN IP4 0.0.0.0
    a=mid:0
    a=sendrecv
    a=sctp-port:5000
    a=max-message-size:262144

    """

    /// The legacy draft form: `DTLS/SCTP 5000` and `a=sctpmap`, answered by an old stack.
    static let legacyAnswer = """
    v=0\r
    o=- 1 1 IN IP4 0.0.0.0\r
    s=-\r
    t=0 0\r
    m=application 9 DTLS/SCTP 5001\r
    c=IN IP4 0.0.0.0\r
    a=ice-ufrag:abcd\r
    a=ice-pwd:abcdefghijklmnopqrstuvwx\r
    a=fingerprint:\(fp256)\r
    a=setup:active\r
    a=mid:data\r
    a=sctpmap:5001 webrtc-datachannel 1024\r

    """
}
