extension SessionDescription {
    /// The SDP text (CRLF line ends) in the RFC 8841 form Chromium accepts:
    /// `m=application 9 UDP/DTLS/SCTP webrtc-datachannel`, `a=sctp-port`, `a=max-message-size`.
    public var sdp: String {
        var lines = [
            "v=0",
            "o=- \(sessionID) \(sessionVersion) IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
        ]
        if let mid { lines.append("a=group:BUNDLE \(mid)") }
        if iceLite { lines.append("a=ice-lite") }
        lines.append("m=application 9 UDP/DTLS/SCTP webrtc-datachannel")
        lines.append("c=IN IP4 0.0.0.0")
        lines.append("a=ice-ufrag:\(iceUfrag)")
        lines.append("a=ice-pwd:\(icePwd)")
        if !iceOptions.isEmpty { lines.append("a=ice-options:\(iceOptions.joined(separator: " "))") }
        for fingerprint in fingerprints { lines.append("a=fingerprint:\(fingerprint.sdpValue)") }
        lines.append("a=setup:\(setup.rawValue)")
        if let mid { lines.append("a=mid:\(mid)") }
        lines.append("a=sctp-port:\(sctpPort)")
        if let maxMessageSize { lines.append("a=max-message-size:\(maxMessageSize)") }
        if let maxDatagramSize { lines.append("a=\(Self.maxDatagramSizeAttribute):\(maxDatagramSize) \(iceUfrag)") }
        for candidate in candidates { lines.append("a=\(candidate)") }
        if endOfCandidates { lines.append("a=end-of-candidates") }
        return lines.joined(separator: "\r\n") + "\r\n"
    }
}
